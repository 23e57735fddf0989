"""Provider registry: provider name -> class, imported lazily so an unused SDK costs nothing."""

from __future__ import annotations

from importlib import import_module

from .base import Prepared, Provider, Route

_CLASSES = {
    "mock": "completions.providers.mock.MockProvider",
    "gemini": "completions.providers.gemini.GeminiProvider",
    "anthropic": "completions.providers.anthropic.AnthropicProvider",
    "openai": "completions.providers.openai_compat.OpenAICompatProvider",
}


def provider_class(name: str) -> type[Provider]:
    """The class implementing provider `name`."""
    module, _, attr = _CLASSES[name].rpartition(".")
    return getattr(import_module(module), attr)


def known(name: str) -> bool:
    return name in _CLASSES


def register(name: str, dotted_path: str) -> None:
    """Add a provider class by dotted path (plugins, and test doubles of whole providers)."""
    _CLASSES[name] = dotted_path


__all__ = ["Prepared", "Provider", "Route", "known", "provider_class", "register"]
