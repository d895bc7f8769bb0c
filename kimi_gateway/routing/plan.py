"""Which endpoints may serve a request, and in what order they are tried."""

from __future__ import annotations

import random
from dataclasses import dataclass

from kimi_gateway.catalog import ModelCard
from kimi_gateway.errors import APIError, provider_unavailable
from kimi_gateway.providers.base import Endpoint
from kimi_gateway.routing import features
from kimi_gateway.routing.health import ProviderHealth
from kimi_gateway.schema.chat import ChatCompletionRequest, ProviderPreferences
from kimi_gateway.stats import EndpointStats


@dataclass(frozen=True, slots=True)
class Candidate:
    card: ModelCard
    endpoint: Endpoint
    drop: frozenset[str]  # request parameters this endpoint does not take, left out of its request


class Filtered(Exception):
    """Nothing of one model survived the filters; says why, for the error the client gets."""

    def __init__(self, error: APIError) -> None:
        self.error = error


def _no_endpoints(message: str) -> APIError:
    return APIError(404, message, code="no_endpoints")


LOCAL = "local"  # the embedded engine's provider name (providers/local.py)


def filter_endpoints(
    request: ChatCompletionRequest,
    card: ModelCard,
    endpoints: list[Endpoint],
    prefs: ProviderPreferences,
    prompt: int,
    media_pending: bool = False,
) -> list[Candidate]:
    """`prompt` is the request's estimated prompt size, worked out once by the caller. With
    `media_pending`, the media parts are not read yet: see `Router.route`."""
    if not endpoints:
        raise Filtered(
            provider_unavailable(
                f"The model '{card.id}' is in the catalog, but no provider serving it is configured. Add a "
                f"provider that lists '{card.id}' under its models in the gateway's config file (for example "
                "Moonshot's API, with its key in MOONSHOT_API_KEY), or pick an available model from "
                "GET /v1/models."
            )
        )
    eps = endpoints  # each filter below builds a new list; the caller's is never changed
    if prefs.only is not None:
        eps = [e for e in eps if e.provider in prefs.only]
    if prefs.ignore:
        eps = [e for e in eps if e.provider not in prefs.ignore]
    if prefs.quantizations:
        eps = [e for e in eps if (e.quantization or "unknown") in prefs.quantizations]
    if not eps:
        raise Filtered(
            _no_endpoints(f"No endpoints found for '{card.id}' matching your provider preferences.")
        )
    if prefs.max_price is not None:
        cap = prefs.max_price
        eps = [
            e
            for e in eps
            if (cap.prompt is None or e.pricing.input <= cap.prompt)
            and (cap.completion is None or e.pricing.output <= cap.completion)
        ]
        if not eps:
            raise Filtered(_no_endpoints(f"No endpoints found for '{card.id}' within max_price."))

    if request.raw_prompt is not None:
        eps = [e for e in eps if e.completions]
        if not eps:
            raise Filtered(
                _no_endpoints(
                    f"No endpoints found for '{card.id}' that serve the completions API (a raw prompt): "
                    "use /v1/chat/completions."
                )
            )

    for modality in sorted(features.input_modalities(request)):
        if media_pending and card.image_via_ocr:
            continue  # intake turns images (and video frames) into text for this model
        accepted = {modality}
        if media_pending and modality == features.VIDEO:
            accepted.add(features.IMAGES)  # intake turns video into frames for image models
        eps = [e for e in eps if accepted & set(e.input_modalities)]
        if not eps:
            raise Filtered(
                _no_endpoints(f"No endpoints found that support {features.FEATURE_NAMES[modality]}.")
            )

    completion = request.requested_max_tokens or 0
    # With media not read yet, their size is a guess (OCR text is usually far smaller than an image's
    # tokens): the context is checked when the request is routed again after intake. The embedded engine
    # counts the prompt exactly with its own tokenizer (and refuses with those numbers), so it is not
    # judged by an estimate here; for upstreams the estimate errs towards letting the provider decide:
    # four characters a token overcounts most prose and code, so only 3/4 of it is held against the context.
    lenient = prompt * 3 // 4
    fitting = (
        eps
        if media_pending
        else [e for e in eps if e.provider == LOCAL or lenient + completion <= e.context_length]
    )
    if not fitting:
        longest = max(e.context_length for e in eps)
        raise Filtered(
            APIError(
                400,
                f"This endpoint's maximum context length is {longest} tokens. However, you requested about "
                f"{lenient + completion} tokens ({lenient} of text input, {completion} in the output). "
                "Please reduce the length of either one.",
                param="messages",
                code="context_length_exceeded",
            )
        )
    eps = fitting

    dropped: set[str] = set()
    for feature in features.soft_features(request):
        supporting = [e for e in eps if feature in e.supported_parameters]
        if supporting:
            eps = supporting
        elif prefs.require_parameters:
            raise Filtered(
                _no_endpoints(f"No endpoints found that support {features.FEATURE_NAMES[feature]}.")
            )
        else:
            dropped.add(feature)  # nobody has it: ignore the feature and keep the model, as OpenRouter does

    params = features.sampling_parameters(request)
    if prefs.require_parameters:
        eps = [e for e in eps if params <= e.supported_parameters]
        if not eps:
            missing = sorted(params - set().union(*(e.supported_parameters for e in endpoints)))
            raise Filtered(
                _no_endpoints(
                    "No endpoints found that support all the request's parameters"
                    + (f" ({', '.join(missing)})." if missing else ".")
                )
            )
    return [Candidate(card, e, frozenset(dropped | (params - e.supported_parameters))) for e in eps]


def order_candidates(
    candidates: list[Candidate],
    prefs: ProviderPreferences,
    health: ProviderHealth,
    stats: EndpointStats,
    rng: random.Random,
) -> list[Candidate]:
    if prefs.order:
        rank = {slug: i for i, slug in enumerate(prefs.order)}
        listed = sorted(
            (c for c in candidates if c.endpoint.provider in rank), key=lambda c: rank[c.endpoint.provider]
        )
        rest = [c for c in candidates if c.endpoint.provider not in rank]
        return listed + (rest if prefs.allow_fallbacks else [])
    sort = prefs.sort_by
    if sort == "price":
        ordered = sorted(candidates, key=lambda c: c.endpoint.price)
    elif sort == "throughput":
        ordered = sorted(
            candidates,
            key=lambda c: -(stats.p50_throughput(c.endpoint.provider, c.card.id) or -1.0),
        )
    elif sort == "latency":
        ordered = sorted(
            candidates,
            key=lambda c: stats.p50_ttft_ms(c.endpoint.provider, c.card.id) or float("inf"),
        )
    else:
        ordered = _weighted(candidates, health, rng)
    return ordered if prefs.allow_fallbacks else ordered[:1]


def _weighted(candidates: list[Candidate], health: ProviderHealth, rng: random.Random) -> list[Candidate]:
    """OpenRouter's default: recent failures go last; the rest are drawn with weights 1/price²."""
    if len(candidates) == 1:
        return candidates  # the common case, with nothing to weigh
    stable = [c for c in candidates if not health.recently_failed(c.endpoint.provider)]
    failing = [c for c in candidates if health.recently_failed(c.endpoint.provider)]
    ordered: list[Candidate] = []
    pool = stable
    while len(pool) > 1:
        # A free endpoint outweighs any paid one.
        weights = [1.0 / (c.endpoint.price**2) if c.endpoint.price > 0 else 1e12 for c in pool]
        pick = rng.choices(range(len(pool)), weights=weights)[0]
        ordered.append(pool.pop(pick))
    return ordered + pool + failing
