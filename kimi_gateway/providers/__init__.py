"""Provider adapters: each turns a validated request into a stream of normalized events."""
