"""The HTTP API: routes, request and response bodies, and error mapping."""
