"""The notifier role: a WebSocket server (`server`) that pushes job events from the hub
(`feed.hub`) to its clients, behind a guard on how many connections it holds (`guard`)."""
