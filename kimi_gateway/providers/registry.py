"""Building upstream providers from the config file, the built-in presets and the environment."""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import replace
from importlib import resources
from typing import Any

from kimi_gateway.catalog import Catalog, Pricing
from kimi_gateway.config import ProviderConfig
from kimi_gateway.errors import APIError
from kimi_gateway.providers.base import Endpoint
from kimi_gateway.providers.client import UpstreamClient
from kimi_gateway.providers.upstream import UpstreamProvider
from kimi_gateway.providers.wire import STYLES

log = logging.getLogger(__name__)


def presets() -> dict[str, dict[str, Any]]:
    text = resources.files("kimi_gateway.providers").joinpath("presets.toml").read_text("utf-8")
    return tomllib.loads(text)


def unconfigured_offers(model_id: str, serving: dict[str, str]) -> list[dict[str, str]]:
    """The built-in providers that offer `model_id` but do not serve it here (their key is not set, or
    they are turned off): what a model page lists as "add a key to use". `serving`: the providers that do,
    name to display name (one configured under another name but with the preset's display name counts)."""
    names = set(serving.values())
    return [
        {"tag": name, "provider_name": preset.get("name", name), "api_key_env": preset.get("api_key_env", "")}
        for name, preset in presets().items()
        if name not in serving and preset.get("name") not in names and model_id in preset.get("models", {})
    ]


def _merged(name: str, user: ProviderConfig | None, preset: dict[str, Any] | None) -> ProviderConfig:
    base = ProviderConfig.model_validate({k: v for k, v in (preset or {}).items()})
    if user is None:
        return base
    data = base.model_dump(exclude_unset=True)
    data.update(user.model_dump(exclude_unset=True))
    models = dict(base.models)
    models.update(user.models)  # a user's model list adds to (and overrides) the preset's
    data["models"] = models
    return ProviderConfig.model_validate(data)


def _endpoint(name: str, display: str, model_id: str, entry: Any, catalog: Catalog) -> Endpoint | None:
    try:
        card = catalog.get(model_id)
    except APIError:
        log.warning("provider model not in catalog", extra={"fields": {"provider": name, "model": model_id}})
        return None
    price = entry.pricing
    return Endpoint(
        provider=name,
        provider_name=display,
        model=model_id,
        upstream_model=entry.upstream or model_id,
        pricing=Pricing(
            input=card.pricing.input if price.input is None else price.input,
            cached_input=(
                (card.pricing.cached_input if price.input is None else price.input)
                if price.cached_input is None
                else price.cached_input
            ),
            output=card.pricing.output if price.output is None else price.output,
        ),
        context_length=entry.context_length or card.context_length,
        supported_parameters=frozenset(entry.supported_parameters or card.supported_parameters),
        input_modalities=frozenset(entry.input_modalities or card.input_modalities),
        quantization=entry.quantization,
    )


def build_upstream_providers(
    configured: dict[str, ProviderConfig], catalog: Catalog, client: UpstreamClient
) -> list[UpstreamProvider]:
    builtin = presets()
    names = list(configured) + [n for n in builtin if n not in configured]
    providers = []
    for name in names:
        user = configured.get(name)
        preset_name = (user.preset if user else None) or (name if name in builtin else None)
        preset = builtin.get(preset_name) if preset_name else None
        if user is None and preset is not None and not os.environ.get(preset.get("api_key_env", "")):
            continue  # a preset nobody configured and whose key is not set
        config = _merged(name, user, preset)
        if not config.enabled:
            continue
        if not config.base_url or not config.style:
            log.error("provider needs base_url and style", extra={"fields": {"provider": name}})
            continue
        api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if config.api_key_env and not api_key:
            log.warning(
                "provider disabled: its key variable is not set",
                extra={"fields": {"provider": name, "variable": config.api_key_env}},
            )
            continue
        display = config.name or name
        style = STYLES[config.style](
            server_parsers=config.server_parsers, forward_image_urls=config.forward_image_urls
        )
        endpoints = [
            replace(e, completions=style.completions, builtin_web_search=style.builtin_web_search)
            for model_id, entry in config.models.items()
            if (e := _endpoint(name, display, model_id, entry, catalog))
        ]
        providers.append(
            UpstreamProvider(
                name, display, config.base_url, style, api_key, config.timeouts, endpoints, client
            )
        )
    return providers
