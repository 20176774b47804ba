"""Provider registry: which providers exist and how settings turn into instances.

Every provider but ``anthropic`` and ``test`` speaks the OpenAI chat-completions API, so each is
a configuration of one OpenAI-compatible provider. SDKs are imported only when used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent_template.errors import ConfigurationError, MissingAPIKeyError

if TYPE_CHECKING:
    from agent_template.config import Settings
    from agent_template.services.model_provider import ModelProvider

__all__ = ["PROVIDERS", "ProviderSpec", "build_chain", "build_provider", "resolve_primary"]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    default_model: str
    key_var: str | None  # None: no key needed
    base_url_var: str | None
    key_required: bool = True
    # Local servers often write tool calls as text; recognise them as real calls.
    text_tool_calls: bool = False


PROVIDERS: dict[str, ProviderSpec] = {
    "openai": ProviderSpec("openai", "gpt-4o-mini", "OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": ProviderSpec(
        "anthropic", "claude-sonnet-4-5", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"
    ),
    "deepseek": ProviderSpec("deepseek", "deepseek-chat", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL"),
    "qwen": ProviderSpec(
        "qwen", "qwen-turbo", "QWEN_API_KEY", "QWEN_BASE_URL", text_tool_calls=True
    ),
    "ollama": ProviderSpec(
        "ollama", "llama3.1", None, "OLLAMA_HOST", key_required=False, text_tool_calls=True
    ),
    "local": ProviderSpec(
        "local", "local-model", "LOCAL_API_KEY", "LOCAL_BASE_URL", False, text_tool_calls=True
    ),
    "test": ProviderSpec("test", "offline", None, None, key_required=False),
}
_AUTO_ORDER = ("openai", "anthropic", "deepseek", "qwen")
_NO_KEY = "not-needed"  # OpenAI-compatible local servers ignore the key but the SDK wants one


def resolve_primary(settings: Settings) -> str:
    """The primary provider: the configured one, else the first with a key, else ``test``."""
    if settings.default_model_provider:
        return settings.default_model_provider
    for name in _AUTO_ORDER:
        if settings.api_key(name):
            return name
    if settings.local_base_url:
        return "local"
    return "test"


def _base_url(spec: ProviderSpec, settings: Settings) -> str | None:
    if spec.base_url_var is None:
        return None
    value: str | None = getattr(settings, spec.base_url_var.lower())
    if spec.name == "ollama" and value:
        value = value.rstrip("/") + "/v1"
    return value


def build_provider(
    name: str, settings: Settings, *, model: str | None = None, api_key: str | None = None
) -> ModelProvider:
    """One provider instance from settings.

    Raises:
        MissingAPIKeyError: the provider needs a key and none is configured.
        ConfigurationError: unknown provider, or ``local`` without ``LOCAL_BASE_URL``.
    """
    spec = PROVIDERS.get(name)
    if spec is None:
        raise ConfigurationError(
            f"Unknown provider {name!r}. Choose one of: {', '.join(PROVIDERS)}."
        )
    model = model or spec.default_model
    if name == "test":
        from agent_template.services.providers.offline import TestProvider

        return TestProvider(model=model)
    base_url = _base_url(spec, settings)
    key = api_key or (settings.api_key(name) or "").split(",")[0].strip() or None
    if key is None:
        if name == "local" and base_url is None:
            raise ConfigurationError(
                "Provider 'local' needs LOCAL_BASE_URL, the address of an OpenAI-compatible "
                "server such as http://localhost:8000/v1."
            )
        # A key is optional for local servers, and for openai/anthropic pointed at one.
        custom_url = name in ("openai", "anthropic") and base_url is not None
        if spec.key_required and not custom_url and spec.key_var is not None:
            raise MissingAPIKeyError(name, spec.key_var)
        key = _NO_KEY
    timeout = settings.model_timeout
    if name == "anthropic":
        from agent_template.services.providers.anthropic import AnthropicProvider

        return AnthropicProvider(api_key=key, base_url=base_url, model=model, timeout=timeout)
    from agent_template.services.providers.openai_compat import OpenAICompatProvider

    return OpenAICompatProvider(
        name=name,
        api_key=key,
        base_url=base_url,
        model=model,
        timeout=timeout,
        text_tool_calls=spec.text_tool_calls,
    )


def _pool(name: str, settings: Settings, model: str | None) -> list[ModelProvider]:
    keys = [k.strip() for k in (settings.api_key(name) or "").split(",") if k.strip()]
    if len(keys) <= 1:
        return [build_provider(name, settings, model=model)]
    pool = []
    for i, key in enumerate(keys):
        member = build_provider(name, settings, model=model, api_key=key)
        member.label = f"{name}#{i + 1}"
        pool.append(member)
    return pool


def build_chain(
    settings: Settings, *, provider: str | None = None, model: str | None = None
) -> list[list[ModelProvider]]:
    """The failover chain: the primary pool, then each of ``FALLBACK_PROVIDERS`` in order."""
    primary = provider or resolve_primary(settings)
    chain = [_pool(primary, settings, model or settings.default_model)]
    for item in settings.fallback_providers:
        name, _, fb_model = item.partition(":")
        if name != primary or fb_model:
            chain.append([build_provider(name, settings, model=fb_model or None)])
    return chain
