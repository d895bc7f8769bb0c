"""Server-side tools: web search and web fetch, run by the gateway inside a request (core/toolloop.py)."""
