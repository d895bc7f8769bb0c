"""The wire schema: request models (validated) and response shapes (typed dicts).

Kept apart from serving logic: nothing here knows about HTTP, routing or providers.
"""
