from vidstream.cli import main

raise SystemExit(main())
