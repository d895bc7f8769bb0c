"""The HTTP surface: the ASGI app, its routes, error rendering and request logging."""
