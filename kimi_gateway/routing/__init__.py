"""Routing: which provider serves a request for a given model."""

from kimi_gateway.routing.router import Router

__all__ = ["Router"]
