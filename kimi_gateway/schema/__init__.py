"""The wire schema: request models (validated) and response shapes (typed dicts), kept apart from serving logic."""
