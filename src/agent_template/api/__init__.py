"""FastAPI routes and the WebSocket layer."""
