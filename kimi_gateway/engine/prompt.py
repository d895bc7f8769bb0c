"""Turning chat messages into the prompt text a local model's own chat template expects."""

from __future__ import annotations

from typing import Any

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from kimi_gateway.engine import toolcalls
from kimi_gateway.errors import invalid_request
from kimi_gateway.schema.chat import (
    AssistantMessage,
    Message,
    SystemMessage,
    TextPart,
    ToolMessage,
)

_PART_KIND = {"image_url": "image", "video_url": "video", "file": "file", "input_audio": "audio"}


def _text(content: Any, index: int, model_id: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
        else:
            kind = _PART_KIND.get(part.type, part.type)
            raise invalid_request(
                f"The model '{model_id}' does not accept {kind} input.",
                param=f"messages[{index}].content[{j}]",
                code="unsupported_content",
            )
    return "\n".join(texts)


class ChatTemplate:
    """A model's chat template (from its GGUF metadata), rendering our messages."""

    def __init__(self, template: str, bos_token: str, eos_token: str) -> None:
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token)
        self.tool_role = self._accepts_tool_role()

    def _accepts_tool_role(self) -> bool:
        probe = [{"role": "user", "content": "q"}, {"role": "tool", "content": "TOOL-PROBE"}]
        try:
            return "TOOL-PROBE" in self._formatter(messages=probe).prompt  # type: ignore[arg-type]
        except Exception:
            return False

    def render(self, messages: list[dict[str, str]]) -> str:
        try:
            return self._formatter(messages=messages).prompt  # type: ignore[arg-type]
        except Exception as exc:  # templates reject message orders with raise_exception()
            raise invalid_request(f"The messages do not fit the model's chat template: {exc}") from None

    def messages(
        self, messages: list[Message], model_id: str, tool_prompt: str | None, tool_mode: str
    ) -> list[dict[str, str]]:
        names: dict[str, str] = {}
        out: list[dict[str, str]] = []
        for i, msg in enumerate(messages):
            if isinstance(msg, SystemMessage):
                out.append({"role": "system", "content": _text(msg.content, i, model_id)})
            elif isinstance(msg, AssistantMessage):
                if msg.tool_calls:
                    for call in msg.tool_calls:
                        names[call.id] = call.function.name
                    text = toolcalls.history_calls(
                        [(c.function.name, c.function.arguments) for c in msg.tool_calls]
                    )
                else:
                    text = _text(msg.content, i, model_id)
                    if tool_mode == toolcalls.MODE_AUTO:
                        text = toolcalls.history_answer(text)
                out.append({"role": "assistant", "content": text})
            elif isinstance(msg, ToolMessage):
                result = _text(msg.content, i, model_id)
                name = msg.name or names.get(msg.tool_call_id, "tool")
                out.append(
                    {
                        "role": "tool" if self.tool_role else "user",
                        "content": toolcalls.tool_result(name, result),
                    }
                )
            else:
                out.append({"role": "user", "content": _text(msg.content, i, model_id)})
        if tool_prompt:
            if out and out[0]["role"] == "system":
                out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + tool_prompt}
            else:
                out.insert(0, {"role": "system", "content": tool_prompt})
        return out
