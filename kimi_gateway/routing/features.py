"""What a request asks of an endpoint: features, sampling parameters, and an estimate of its size."""

from __future__ import annotations

from kimi_gateway.schema.chat import (
    AssistantMessage,
    ChatCompletionRequest,
    ImagePart,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
    UserMessage,
    VideoPart,
)

# Request fields that name a parameter an endpoint may or may not support (OpenRouter's vocabulary).
SAMPLING = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "n",
        "parallel_tool_calls",
    }
)

# Features that narrow the endpoints when some support them, and are dropped when none do.
TOOLS, RESPONSE_FORMAT, REASONING = "tools", "response_format", "reasoning"
IMAGES, VIDEO = "image", "video"

FEATURE_NAMES = {
    TOOLS: "tool use",
    RESPONSE_FORMAT: "structured output (response_format)",
    REASONING: "reasoning",
    IMAGES: "image input",
    VIDEO: "video input",
}


def soft_features(request: ChatCompletionRequest) -> list[str]:
    wanted = []
    if request.tools and request.tool_choice != "none":
        wanted.append(TOOLS)
    if isinstance(request.response_format, ResponseFormatJSONObject | ResponseFormatJSONSchema):
        wanted.append(RESPONSE_FORMAT)
    if request.reasoning_wanted:
        wanted.append(REASONING)
    return wanted


def input_modalities(request: ChatCompletionRequest) -> set[str]:
    needed: set[str] = set()
    for message in request.messages:
        if isinstance(message, UserMessage) and not isinstance(message.content, str):
            for part in message.content:
                if isinstance(part, ImagePart):
                    needed.add(IMAGES)
                elif isinstance(part, VideoPart):
                    needed.add(VIDEO)
    return needed


def sampling_parameters(request: ChatCompletionRequest) -> frozenset[str]:
    return frozenset(request.model_fields_set & SAMPLING)


TOKENS_PER_IMAGE = 1024  # Kimi-VL's original checkpoints spend at most 1,024 tokens on an image


def estimate_prompt_tokens(request: ChatCompletionRequest) -> int:
    """About four characters a token, four tokens a message for the template, 1,024 an image: a documented
    estimate for models whose tokenizer the gateway does not have."""
    chars = 0
    images = 0
    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            chars += len(content)
        elif content is not None:
            for part in content:
                if isinstance(part, ImagePart | VideoPart):
                    images += 1
                else:
                    chars += len(getattr(part, "text", ""))
        if type(message) is AssistantMessage:
            # Replayed calls and reasoning go upstream too (Kimi requires the reasoning of tool-call
            # turns): in agent loops they are most of the context.
            for call in message.tool_calls or ():
                chars += len(call.function.name) + len(call.function.arguments)
            chars += len(message.reasoning_content or message.reasoning or "")
    for tool in request.tools or ():
        chars += (
            len(tool.function.name)
            + len(tool.function.description or "")
            + len(str(tool.function.parameters))
        )
    return chars // 4 + 4 * len(request.messages) + TOKENS_PER_IMAGE * images


def prompt_token_bound(request: ChatCompletionRequest) -> int:
    """At most how many tokens the prompt can be, whatever the tokenizer: a byte-level BPE never makes more
    tokens than UTF-8 bytes. The estimate above is for routing; a credit hold needs this bound, or a prompt
    of emoji or digits (a token a byte) costs several times what was held."""
    size = 0
    images = 0

    def text(value: str) -> int:
        return len(value) if value.isascii() else len(value.encode())

    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            size += text(content)
        elif content is not None:
            for part in content:
                if isinstance(part, ImagePart | VideoPart):
                    images += 1
                else:
                    size += text(getattr(part, "text", ""))
        if type(message) is AssistantMessage:
            for call in message.tool_calls or ():
                size += text(call.function.name) + text(call.function.arguments)
            size += text(message.reasoning_content or message.reasoning or "")
    for tool in request.tools or ():
        described = str(tool.function.parameters) + (tool.function.description or "")
        size += text(tool.function.name) + text(described)
    return size + 8 * len(request.messages) + TOKENS_PER_IMAGE * images
