"""The notifier role: pushes job events to WebSocket clients."""
