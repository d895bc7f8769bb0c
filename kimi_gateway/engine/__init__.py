"""The embedded llama.cpp engine: local GGUF models served in-process, off the event loop."""

from kimi_gateway.engine import toolcalls
from kimi_gateway.engine.worker import Job, LocalModel, SamplingParams

__all__ = ["Job", "LocalModel", "SamplingParams", "toolcalls"]
