"""Per-family request rules and thinking semantics, as Moonshot's API enforces them.

The numbers live in the catalog (`rules` of each model); this module only applies them. Messages follow
Moonshot's, so clients that match on them keep working.

Strict, a request breaking a rule gets Moonshot's 400. Otherwise (the default for client requests, as
OpenRouter adapts unless `provider.require_parameters`), what can be adapted is, and named:
- an earlier tool-call turn without its reasoning gets it back from the gateway's memory of the turns it
  served (`reasoning_restored`, core/replay.py); not found, thinking is off for the request
  (`thinking_off:reasoning_missing`), or on a model that always thinks the turn's reasoning is empty
  (`reasoning_empty`);
- a forced tool choice turns thinking off (`thinking_off:tool_choice`) where the model allows it;
- a temperature or top_p the model does not take becomes the model's (`temperature:1`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kimi_gateway.catalog.cards import ModelCard
from kimi_gateway.errors import invalid_request
from kimi_gateway.schema.chat import (
    AssistantMessage,
    ChatCompletionRequest,
    NamedToolChoice,
    Thinking,
    ToolCall,
)


def _number(value: float) -> str:
    return f"{value:g}"


def check_sampling(
    request: ChatCompletionRequest, card: ModelCard, thinking: bool, adapted: list[str] | None = None
) -> None:
    """`adapted` given: values the model does not take become the model's, and are named there."""
    rules = card.rules
    fixed = rules.fixed_temperature_thinking if thinking else rules.fixed_temperature_instant
    if fixed is not None:
        if request.temperature is not None and abs(request.temperature - fixed) > 1e-9:
            if adapted is None:
                raise invalid_request(
                    f"invalid temperature: only {_number(fixed)} is allowed for this model",
                    param="temperature",
                )
            adapted.append(f"temperature:{_number(fixed)}")
        request.temperature = fixed
    elif rules.temperature_range is not None and request.temperature is not None:
        low, high = rules.temperature_range
        if not low <= request.temperature <= high:
            if adapted is None:
                raise invalid_request(
                    f"invalid temperature: {_number(request.temperature)}, must be within "
                    f"[{_number(low)}, {_number(high)}]",
                    param="temperature",
                )
            request.temperature = min(max(request.temperature, low), high)
            adapted.append(f"temperature:{_number(request.temperature)}")
    if rules.fixed_top_p is not None:
        if request.top_p is not None and abs(request.top_p - rules.fixed_top_p) > 1e-9:
            if adapted is None:
                raise invalid_request(
                    f"invalid top_p: only {_number(rules.fixed_top_p)} is allowed for this model",
                    param="top_p",
                )
            adapted.append(f"top_p:{_number(rules.fixed_top_p)}")
        request.top_p = rules.fixed_top_p
    if rules.max_n is not None and request.n > rules.max_n:
        raise invalid_request(f"invalid n: {request.n}, must be between 1 and {rules.max_n}", param="n")
    if (
        rules.min_temperature_for_n is not None
        and request.n > 1
        and request.temperature is not None
        and request.temperature < rules.min_temperature_for_n
    ):
        raise invalid_request(
            "invalid n: when temperature is close to 0, n must be 1 (the samples would be identical)",
            param="n",
        )
    stops = request.stop_list
    if rules.max_stop is not None and len(stops) > rules.max_stop:
        raise invalid_request(
            f"invalid stop: at most {rules.max_stop} stop sequences are allowed", param="stop"
        )
    if rules.max_stop_bytes is not None:
        for i, stop in enumerate(stops):
            if len(stop.encode("utf-8")) > rules.max_stop_bytes:
                raise invalid_request(
                    f"invalid stop: stop[{i}] is longer than {rules.max_stop_bytes} bytes", param=f"stop[{i}]"
                )


def _check_thinking(bare: list[tuple[int, AssistantMessage]], forced: str | None) -> None:
    """Moonshot's 400s for what thinking requires (strict)."""
    if forced is not None:
        raise invalid_request(
            f"tool_choice '{forced}' is incompatible with thinking enabled", param="tool_choice"
        )
    for index, _ in bare:
        raise invalid_request(
            "thinking is enabled but reasoning_content is missing in assistant tool call message "
            f"at index {index}",
            param=f"messages[{index}].reasoning_content",
        )


def _forced(request: ChatCompletionRequest) -> str | None:
    """How the tool choice forces a tool ("required", "specified"), if it does."""
    choice = request.tool_choice
    if choice == "required":
        return "required"
    return "specified" if isinstance(choice, NamedToolChoice) else None


def _bare_turns(request: ChatCompletionRequest) -> list[tuple[int, AssistantMessage]]:
    """Assistant tool-call turns without their reasoning. Clients written for OpenRouter replay it under
    its names: it is carried over first."""
    bare = []
    for index, message in enumerate(request.messages):
        if type(message) is not AssistantMessage or not message.tool_calls:
            continue
        if message.reasoning_content is not None:
            continue
        text = message.reasoning
        if text is None and message.reasoning_details:
            parts = [d.get("text") for d in message.reasoning_details if isinstance(d.get("text"), str)]
            text = "".join(str(p) for p in parts) if parts else None
        if text is None:
            bare.append((index, message))
        else:
            message.reasoning_content = text
    return bare


def _adapt_thinking(
    request: ChatCompletionRequest,
    card: ModelCard,
    restore: Callable[[ToolCall], str | None],
    bare: list[tuple[int, AssistantMessage]],
    forced: str | None,
    adapted: list[str],
) -> bool:
    """Whether the request still thinks, once adapted to what thinking requires."""
    missing = []
    for index, message in bare:
        found = next(filter(None, (restore(call) for call in message.tool_calls or ())), None)
        if found is None:
            missing.append((index, message))
        else:
            message.reasoning_content = found
            if "reasoning_restored" not in adapted:
                adapted.append("reasoning_restored")
    if (forced is not None or missing) and card.thinking == "optional":
        request.thinking = Thinking(type="disabled")
        request.reasoning = None
        request.reasoning_effort = None
        adapted.append("thinking_off:" + ("tool_choice" if forced is not None else "reasoning_missing"))
        return False
    if forced is not None:
        _check_thinking([], forced)  # a model that always thinks cannot take a forced tool: refused
    for _, message in missing:
        message.reasoning_content = ""
    if missing:
        adapted.append("reasoning_empty")
    return True


def check_tool_names(request: ChatCompletionRequest, card: ModelCard) -> None:
    shortest = card.rules.min_tool_name
    if shortest is None:
        return
    for i, tool in enumerate(request.tools or ()):
        if len(tool.function.name) < shortest:
            raise invalid_request(
                f"invalid tool name '{tool.function.name}': this model needs at least {shortest} characters",
                param=f"tools[{i}].function.name",
            )


_NOTHING: tuple[str, ...] = ()


def apply_rules(
    request: ChatCompletionRequest,
    card: ModelCard,
    strict: bool = True,
    restore: Callable[[ToolCall], str | None] | None = None,
) -> Sequence[str]:
    """Refuse what the model's family refuses (strict) or adapt it, and pin the values it fixes. The
    adaptations made, by name (`restore` finds a served turn's reasoning by one of its calls). On every
    request: one pass over the messages, and nothing built when nothing needs adapting."""
    if request.raw_prompt is not None:
        # The completions API: no chat and no thinking; Moonshot's rules are its chat's.
        return _NOTHING
    if request.tools:
        check_tool_names(request, card)
    adapted: list[str] | None = None if strict else []
    thinking = card.thinking_on(request.reasoning_wanted)
    if thinking:
        bare = _bare_turns(request) if len(request.messages) > 1 else []
        forced = _forced(request)
        if bare or forced is not None:
            if adapted is None:
                _check_thinking(bare, forced)
            else:
                thinking = _adapt_thinking(request, card, restore or (lambda _: None), bare, forced, adapted)
    check_sampling(request, card, thinking, adapted)
    return adapted or _NOTHING
