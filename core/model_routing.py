"""Which provider serves a model, by its name.

- `claude-*` and `anthropic/<model>`: Anthropic (the `anthropic` SDK);
- `openai/<model>`: OpenAI's Chat Completions (OPENAI_API_KEY, OPENAI_BASE_URL);
- `<name>/<model>`: the OpenAI-compatible endpoint `name` of LOOPLLAMA_PROVIDERS;
- `loopllama-offline`: the built-in offline model.

The API refuses a model whose provider this deployment does not have; a worker that
lacks it fails the step at once. Both read the same settings, so both agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OFFLINE_MODEL = "loopllama-offline"
ANTHROPIC = "anthropic"
OPENAI = "openai"
OFFLINE = "offline"
# Names a LOOPLLAMA_PROVIDERS entry may not take: the built-in providers' own, and
# `claude`, which would shadow Claude's model names.
RESERVED_PROVIDER_NAMES = frozenset({ANTHROPIC, OPENAI, OFFLINE, "claude", "loopllama"})
PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

_CLAUDE_MODEL = re.compile(r"^claude-[a-z0-9][a-z0-9.\-]{0,98}$")
# A provider's own model name: Ollama's `llama3.2:3b`, OpenRouter's `meta-llama/llama-3`.
_PROVIDER_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+\-]{0,99}$")


@dataclass(frozen=True)
class Route:
    """A model as its provider knows it."""

    provider: str
    model: str


def route(model: str) -> Route | None:
    """The provider and the provider's model name for `model`; None when the name has
    none of the forms in the module doc."""
    if model == OFFLINE_MODEL:
        return Route(OFFLINE, model)
    if _CLAUDE_MODEL.match(model):
        return Route(ANTHROPIC, model)
    provider, sep, name = model.partition("/")
    if sep and PROVIDER_NAME.match(provider) and _PROVIDER_MODEL.match(name):
        return Route(provider, name)
    return None


MODEL_FORMS = (
    "a Claude model such as 'claude-sonnet-4-6' (or 'anthropic/<model>'), "
    "'openai/<model>', '<provider>/<model>' for a provider in LOOPLLAMA_PROVIDERS, or "
    f"'{OFFLINE_MODEL}' for the built-in offline model"
)


def unroutable(model: str) -> str:
    """What to say about a model name that has no provider's form."""
    return f"unknown model {model!r}: use {MODEL_FORMS}"


def unconfigured(model: str, provider: str, available: tuple[str, ...]) -> str:
    """What to say about a model whose provider this deployment does not have."""
    forms = ", ".join(
        "claude-* (anthropic)" if name == ANTHROPIC
        else OFFLINE_MODEL if name == OFFLINE else f"{name}/<model>"
        for name in available)
    setting = ("set OPENAI_API_KEY (or OPENAI_BASE_URL) on the API and every worker"
               if provider == OPENAI else
               f"add {provider}=<base URL> to LOOPLLAMA_PROVIDERS on the API and every worker")
    return (f"model {model!r} needs the provider {provider!r}, which this deployment does "
            f"not have; it has: {forms}. To use it, {setting}.")
