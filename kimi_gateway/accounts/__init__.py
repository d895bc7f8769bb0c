"""Accounts and their API keys (credits, pricing and limits join them here)."""
