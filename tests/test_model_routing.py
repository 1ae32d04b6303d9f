"""Model names route to providers; the settings say which providers a deployment has."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from activities.models.calls import not_configured
from core.model_routing import Route, route
from core.settings import Settings, SettingsError
from core.types import Agent


@pytest.mark.parametrize(("model", "expected"), [
    ("claude-sonnet-4-6", Route("anthropic", "claude-sonnet-4-6")),
    ("anthropic/claude-opus-4-6", Route("anthropic", "claude-opus-4-6")),
    ("openai/gpt-4.1-mini", Route("openai", "gpt-4.1-mini")),
    ("local/llama3.2:3b", Route("local", "llama3.2:3b")),
    ("router/meta-llama/llama-3.1-8b", Route("router", "meta-llama/llama-3.1-8b")),
    ("loopllama-offline", Route("offline", "loopllama-offline")),
])
def test_model_names_route_to_their_provider(model: str, expected: Route) -> None:
    assert route(model) == expected


@pytest.mark.parametrize("model", ["gpt-4", "Local/x", "local/", "/x", "local/ x", "claude"])
def test_names_of_no_form_do_not_route_and_agents_refuse_them(model: str) -> None:
    assert route(model) is None
    with pytest.raises(ValidationError, match="unknown model"):
        Agent(role="a", model=model)


def test_providers_come_from_the_environment_with_their_keys() -> None:
    settings = Settings.from_env({
        "LOOPLLAMA_PROVIDERS": "local=http://127.0.0.1:11434/v1/, my-router=https://r.example/v1",
        "LOOPLLAMA_PROVIDER_MY_ROUTER_API_KEY": "sk-router-123",
        "OPENAI_API_KEY": "sk-openai-123",
    })
    local, router = settings.providers
    assert (local.name, local.base_url, local.api_key) == ("local", "http://127.0.0.1:11434/v1",
                                                          None)
    assert router.api_key is not None and router.api_key.value == "sk-router-123"
    assert router.key_setting == "LOOPLLAMA_PROVIDER_MY_ROUTER_API_KEY"
    assert "sk-router-123" not in repr(settings)
    assert settings.model_providers() == ("anthropic", "openai", "local", "my-router", "offline")
    assert settings.model_problem("local/llama3.2") is None
    assert settings.model_problem("openai/gpt-4.1") is None


@pytest.mark.parametrize(("raw", "says"), [
    ("local", "must look like"),
    ("local=ftp://x", "must look like"),
    ("Local=http://x", "must look like"),
    ("openai=http://x", "built-in provider"),
    ("claude=http://x", "built-in provider"),
    ("a=http://x,a=http://y", "twice"),
])
def test_malformed_providers_are_refused_at_start(raw: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        Settings.from_env({"LOOPLLAMA_PROVIDERS": raw})


def test_a_provider_the_deployment_lacks_is_named_with_those_it_has() -> None:
    settings = Settings.from_env({"LOOPLLAMA_PROVIDERS": "local=http://127.0.0.1:1/v1"})
    problem = settings.model_problem("openai/gpt-4.1")
    assert problem is not None
    assert "'openai'" in problem and "local/<model>" in problem and "OPENAI_API_KEY" in problem
    other = settings.model_problem("vllm/qwen")
    assert other is not None and "LOOPLLAMA_PROVIDERS" in other and "vllm=" in other
    # Claude is always accepted: a worker without its key fails the step, saying so.
    assert settings.model_problem("claude-sonnet-4-6") is None


def test_a_worker_says_what_it_lacks_for_each_provider() -> None:
    assert "ANTHROPIC_API_KEY" in not_configured("claude-sonnet-4-6")
    assert "OPENAI_API_KEY" in not_configured("openai/gpt-4.1")
    lacking = not_configured("local/llama3.2")
    assert "'local'" in lacking and "LOOPLLAMA_PROVIDERS" in lacking


def test_rate_limits_take_provider_model_names() -> None:
    settings = Settings.from_env({"LOOPLLAMA_MODEL_RATE_LIMITS": "local/llama3.2:3b=2/s"})
    assert settings.model_rate_limits == (("local/llama3.2:3b", 2.0),)
