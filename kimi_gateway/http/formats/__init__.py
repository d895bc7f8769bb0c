"""The wire formats clients speak, as adapters at the edge of one core.

Each format turns its request body into the gateway's own request (`ChatCompletionRequest`, OpenAI's chat
shape with OpenRouter's and Moonshot's extensions), and the normalized events of the generation back into its
own response: routing, admission, media, providers and settlement never know which format a request came in.
"""

from kimi_gateway.http.formats.base import FormatContext, WireFormat

__all__ = ["FormatContext", "WireFormat"]
