"""Inside the engine process: a chat request becomes a job for the local model (prompt tokens from the
model's own template and tokenizer, a grammar for tools or structured output, sampling settings), or the
4xx it earned (a prompt over the context, a tool_choice naming no tool, a logit_bias outside the vocabulary).
"""

from __future__ import annotations

from typing import Any

from llama_cpp.llama_grammar import LlamaGrammar

from kimi_gateway.engine import toolcalls
from kimi_gateway.engine.grammar import json_object_grammar, json_schema_grammar
from kimi_gateway.engine.worker import Job, LocalModel, SamplingParams, Sink
from kimi_gateway.errors import context_length_exceeded, invalid_request
from kimi_gateway.schema.chat import (
    ChatCompletionRequest,
    NamedToolChoice,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
)


def build(model: LocalModel, request: ChatCompletionRequest, defaults: dict[str, Any], sink: Sink) -> Job:
    mode = toolcalls.tool_mode(request.tools, request.tool_choice)
    grammar, tool_prompt = constraints(request, mode)
    if grammar is not None and request.ignore_eos:
        # A grammar ends where its output is complete; with end-of-sequence banned there is then no
        # token left to sample, and llama.cpp aborts the process.
        raise invalid_request(
            "ignore_eos cannot be combined with tools or response_format: constrained output ends when "
            "it is complete.",
            param="ignore_eos",
        )
    tokens = prompt_tokens(model, request, tool_prompt, mode)

    available = model.n_ctx - len(tokens)
    requested = request.requested_max_tokens
    if requested is not None and requested > available:
        raise context_length_exceeded(model.n_ctx, len(tokens), requested)
    if available <= 0:
        raise context_length_exceeded(model.n_ctx, len(tokens), 1)
    max_tokens = requested or min(defaults.get("max_tokens") or available, available)

    # What the request leaves unset comes from the model card's defaults (a tiny model needs the ones
    # its authors recommend, or it repeats itself), then from the neutral value.
    params = SamplingParams(
        temperature=_first(request.temperature, defaults.get("temperature"), 1.0),
        top_p=_first(request.top_p, defaults.get("top_p"), 1.0),
        top_k=int(_first(request.top_k, defaults.get("top_k"), 0)),
        min_p=_first(request.min_p, defaults.get("min_p"), 0.0),
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        repeat_penalty=_first(request.repetition_penalty, _default_penalty(defaults, grammar), 1.0),
        seed=request.seed,
    )
    return Job(
        tokens=tokens,
        params=params,
        max_tokens=max_tokens,
        sink=sink,
        n=request.n,
        stop=request.stop_list,
        grammar=grammar,
        logit_bias=logit_bias(request, model),
        ignore_eos=request.ignore_eos,
    )


def prompt_tokens(
    model: LocalModel,
    request: ChatCompletionRequest,
    tool_prompt: str | None = None,
    mode: str = toolcalls.MODE_NONE,
) -> list[int]:
    """The prompt exactly as the model will see it, tokenized by the model's own tokenizer."""
    if request.raw_prompt is not None:
        return model.tokenize(request.raw_prompt)  # the legacy completions API: no template
    template = model.template
    assert template is not None
    messages = template.messages(request.messages, model.model_id, tool_prompt, mode)
    prefix = request.partial_prefix
    if prefix is not None:
        messages = messages[:-1]  # the prefix continues the assistant turn the template opens
    return model.tokenize(template.render(messages) + (prefix or ""))


def counted_tokens(model: LocalModel, request: ChatCompletionRequest) -> int:
    """The prompt's length as `build` would make it: tools included, as the system prompt that describes
    them (without building their grammar, which counting does not need)."""
    mode = toolcalls.tool_mode(request.tools, request.tool_choice)
    tool_prompt = None
    if mode != toolcalls.MODE_NONE:
        assert request.tools is not None
        tools = toolcalls.selected_tools(request.tools, request.tool_choice)
        tool_prompt = toolcalls.system_prompt(tools, mode)
    return len(prompt_tokens(model, request, tool_prompt, mode))


def constraints(request: ChatCompletionRequest, mode: str) -> tuple[LlamaGrammar | None, str | None]:
    if mode != toolcalls.MODE_NONE:
        assert request.tools is not None
        choice = request.tool_choice
        tools = toolcalls.selected_tools(request.tools, choice)
        if isinstance(choice, NamedToolChoice) and not tools:
            raise invalid_request(
                f"tool_choice names the function '{choice.function.name}', which is not in tools.",
                param="tool_choice",
            )
        schema = toolcalls.envelope_schema(tools, mode, parallel=request.parallel_tool_calls is True)
        return json_schema_grammar(schema, param="tools"), toolcalls.system_prompt(tools, mode)
    fmt = request.response_format
    if isinstance(fmt, ResponseFormatJSONObject):
        return json_object_grammar(), None
    if isinstance(fmt, ResponseFormatJSONSchema):
        schema = fmt.json_schema.schema_ or {"type": "object"}
        return json_schema_grammar(schema, param="response_format.json_schema.schema"), None
    return None, None


def logit_bias(request: ChatCompletionRequest, model: LocalModel) -> dict[int, float] | None:
    if not request.logit_bias:
        return None
    vocab = model.vocab_size()
    bias: dict[int, float] = {}
    for key, value in request.logit_bias.items():
        if not key.isdigit() or int(key) >= vocab:
            raise invalid_request(
                f"logit_bias keys must be token ids below {vocab}; got '{key}'.", param="logit_bias"
            )
        bias[int(key)] = value
    return bias


def _default_penalty(defaults: dict[str, Any], grammar: LlamaGrammar | None) -> float | None:
    """The card's repeat penalty; half as strong under a grammar. JSON repeats its braces, quotes and keys by
    nature, and the full penalty bends tool calls; none at all, and greedy SmolLM2 fills a JSON array with
    the same string until max_tokens ("loyalty", "loyalty", ...; 1.05 ends it)."""
    penalty = defaults.get("repetition_penalty")
    if penalty is None or grammar is None:
        return None if penalty is None else float(penalty)
    return 1.0 + (float(penalty) - 1.0) / 2


def _first(*values: float | None) -> float:
    for value in values:
        if value is not None:
            return value
    raise AssertionError("the last value is never None")
