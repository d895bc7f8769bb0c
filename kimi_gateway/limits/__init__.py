"""Rate limits: sliding-window requests per minute and concurrency slots, in-process or in Redis."""

from kimi_gateway.limits.base import Decision, Limiter, Window
from kimi_gateway.limits.memory import MemoryLimiter

__all__ = ["Decision", "Limiter", "MemoryLimiter", "Window"]
