"""OpenRouter's model variants: `:nitro` (fastest endpoints first) and `:floor` (cheapest first), on any
model id, in every wire format. The suffix is taken off before the catalog, pricing or tokenizer see the id,
and becomes the request's provider sort, unless the request sorts or orders providers itself. `:online`
gives the model web search (run by the gateway: core/toolloop.py); `:swarm` makes the request a swarm run
(core/swarm.py)."""

from __future__ import annotations

from kimi_gateway.schema.chat import AgentOptions, ChatCompletionRequest, ProviderPreferences
from kimi_gateway.schema.server_tools import ServerTool

SORTS = {"nitro": "throughput", "floor": "price"}


ONLINE = "online"
SWARM = "swarm"


def split(model: str) -> tuple[str, str | None]:
    """(the model id, the variant's sort, `online`, `swarm`, or None)."""
    base, colon, suffix = model.rpartition(":")
    if colon and base and (suffix in SORTS or suffix in (ONLINE, SWARM)):
        return base, SORTS.get(suffix, suffix)
    return model, None


def apply_variant(request: ChatCompletionRequest) -> None:
    if ":" not in request.model and not request.models:
        return
    request.model, sort = split(request.model)
    if request.models:
        request.models = [split(m)[0] for m in request.models]
    if sort == ONLINE:
        if not any(tool.kind == "web_search" for tool in request.server_tools):
            request.server_tools = [*request.server_tools, ServerTool("web_search", "web_search")]
        return
    if sort == SWARM:  # a swarm run with the request's options, or the defaults (core/swarm.py)
        if request.agent is None:
            request.agent = AgentOptions()
        return
    if sort is None:
        return
    prefs = request.provider if request.provider is not None else ProviderPreferences()
    if prefs.sort is None and not prefs.order:
        prefs.sort = sort  # type: ignore[assignment]
    request.provider = prefs
