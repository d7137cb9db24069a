from vidstream.cli.main import main

raise SystemExit(main())
