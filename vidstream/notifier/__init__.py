"""The notifier role: a WebSocket server (`server`) that pushes job events to its clients from
its own hub (`feed.hub`, on the Redis feed), behind a guard on how many connections it holds
(`guard`). The gateway runs a hub of its own for Server-Sent Events (`http.sse`)."""
