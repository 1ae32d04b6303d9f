"""`Settings.from_env`: defaults, parsing, refusals with helpful messages, and no leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings, SettingsError


def keys(settings: Settings) -> list[str]:
    return [secret.value for secret in settings.api_keys]


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.temporal_namespace == "default"
    assert settings.temporal_task_queue == "loopllama"
    assert settings.data_dir == Path(".loopllama")
    # None means "embedded dev server" (only `loopllama dev` can run one).
    assert settings.temporal_address is None
    assert settings.api_keys == ()
    assert settings.anthropic_api_key is None
    assert settings.anthropic_base_url is None
    assert settings.smtp_url is None
    assert settings.http_allowlist == ()


def test_blank_values_count_as_unset() -> None:
    settings = Settings.from_env(
        {
            "TEMPORAL_ADDRESS": "   ",
            "TEMPORAL_NAMESPACE": "",
            "TEMPORAL_TASK_QUEUE": " ",
            "LOOPLLAMA_API_KEY": "  ",
            "LOOPLLAMA_DATA_DIR": "",
        }
    )
    assert settings.temporal_address is None
    assert settings.temporal_namespace == "default"
    assert settings.temporal_task_queue == "loopllama"
    assert settings.api_keys == ()
    assert settings.data_dir == Path(".loopllama")


def test_values_are_read() -> None:
    settings = Settings.from_env(
        {
            "TEMPORAL_ADDRESS": " temporal.internal:7233 ",
            "TEMPORAL_NAMESPACE": "crews",
            "TEMPORAL_TASK_QUEUE": "crews-q",
            "LOOPLLAMA_DATA_DIR": "/var/lib/loopllama",
        }
    )
    assert settings.temporal_address == "temporal.internal:7233"
    assert settings.temporal_namespace == "crews"
    assert settings.temporal_task_queue == "crews-q"
    assert settings.data_dir == Path("/var/lib/loopllama")


def test_single_api_key() -> None:
    assert keys(Settings.from_env({"LOOPLLAMA_API_KEY": "  only-key  "})) == ["only-key"]


def test_comma_separated_api_keys_trimmed_and_deduplicated() -> None:
    settings = Settings.from_env({"LOOPLLAMA_API_KEY": " first , ,second,first,, third ,second"})
    assert keys(settings) == ["first", "second", "third"]


@pytest.mark.parametrize("raw", ["k3y-good, k3y bad", "k3y\tbad", "k3y-a,k3y-b k3y-c"])
def test_api_key_with_inner_whitespace_refused(raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"LOOPLLAMA_API_KEY": raw})
    message = str(info.value)
    assert "LOOPLLAMA_API_KEY" in message
    # The refusal must not echo the (secret) keys back.
    assert "k3y" not in message


@pytest.mark.parametrize(
    "address", ["localhost", "http://127.0.0.1:7233", "temporal:port", "temporal:7233/x", ":7233"]
)
def test_malformed_temporal_address_refused(address: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"TEMPORAL_ADDRESS": address})
    message = str(info.value)
    assert "TEMPORAL_ADDRESS" in message
    assert "127.0.0.1:7233" in message  # an example of what is expected
    assert "host:port" in message


@pytest.mark.parametrize(
    "address", ["127.0.0.1:7233", "temporal:7233", "my-ns.a1b2c.tmprl.cloud:7233", "[::1]:7233"]
)
def test_host_port_temporal_address_accepted(address: str) -> None:
    assert Settings.from_env({"TEMPORAL_ADDRESS": address}).temporal_address == address


@pytest.mark.parametrize("address", ["127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:7233:7233"])
def test_temporal_address_with_invalid_port_refused(address: str) -> None:
    with pytest.raises(SettingsError, match="TEMPORAL_ADDRESS"):
        Settings.from_env({"TEMPORAL_ADDRESS": address})


def test_anthropic_base_url_without_scheme_refused() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"ANTHROPIC_BASE_URL": "api.anthropic.com"})
    assert "ANTHROPIC_BASE_URL" in str(info.value)
    assert "https://" in str(info.value)


def test_anthropic_base_url_with_scheme_accepted() -> None:
    for url in ("https://api.anthropic.com", "http://127.0.0.1:9999"):
        assert Settings.from_env({"ANTHROPIC_BASE_URL": url}).anthropic_base_url == url


@pytest.mark.parametrize(
    "url", ["http://user:hunter2@mail.example.com:587", "mail.example.com:587", "imap://x:1"]
)
def test_smtp_url_with_wrong_scheme_refused(url: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"LOOPLLAMA_SMTP_URL": url})
    message = str(info.value)
    assert "LOOPLLAMA_SMTP_URL" in message
    assert "smtp://" in message
    # The refusal must not echo a password back.
    assert "hunter2" not in message


def test_smtp_url_accepted() -> None:
    for url in ("smtp://u:p@mail:587", "smtps://u:p@mail:465"):
        settings = Settings.from_env({"LOOPLLAMA_SMTP_URL": url})
        assert settings.smtp_url is not None
        assert settings.smtp_url.value == url


def test_http_allowlist_lower_cased() -> None:
    settings = Settings.from_env({"LOOPLLAMA_HTTP_ALLOWLIST": " Example.COM, ,API.GitHub.com ,"})
    assert settings.http_allowlist == ("example.com", "api.github.com")


def test_require_api_keys() -> None:
    with pytest.raises(SettingsError, match="LOOPLLAMA_API_KEY"):
        Settings.from_env({}).require_api_keys()
    Settings.from_env({"LOOPLLAMA_API_KEY": "k"}).require_api_keys()


def test_require_temporal_address() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({}).require_temporal_address()
    assert "TEMPORAL_ADDRESS" in str(info.value)
    assert "loopllama dev" in str(info.value)
    settings = Settings.from_env({"TEMPORAL_ADDRESS": "temporal:7233"})
    assert settings.require_temporal_address() == "temporal:7233"


def test_secrets_never_in_repr_or_str() -> None:
    anthropic_key = "sk-ant-api03-SECRETanthropicKEY"
    api_keys = ("llkey-SECRET-one", "llkey-SECRET-two")
    smtp_password = "pa55-SECRET-word"
    smtp_url = f"smtps://mailer:{smtp_password}@mail.example.com:465"
    settings = Settings.from_env(
        {
            "ANTHROPIC_API_KEY": anthropic_key,
            "LOOPLLAMA_API_KEY": ",".join(api_keys),
            "LOOPLLAMA_SMTP_URL": smtp_url,
        }
    )
    # The values are there for the code that needs them...
    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.value == anthropic_key
    assert keys(settings) == list(api_keys)
    assert settings.smtp_url is not None
    assert settings.smtp_url.value == smtp_url
    # ...but never in any rendering of the settings.
    renderings = [
        repr(settings),
        str(settings),
        f"{settings}",
        repr(settings.api_keys),
        str(settings.anthropic_api_key),
        repr(settings.smtp_url),
    ]
    for text in renderings:
        for secret in (anthropic_key, *api_keys, smtp_password, smtp_url):
            assert secret not in text, (secret, text)
        assert "SECRET" not in text, text


def test_temporal_tls_and_cloud_settings_are_checked_at_start(tmp_path: Path) -> None:
    from temporalio.service import TLSConfig

    from core.temporal import tls_config

    cert, key, ca = (tmp_path / name for name in ("c.pem", "k.pem", "ca.pem"))
    for path in (cert, key, ca):
        path.write_text(f"-----BEGIN {path.stem}-----\n")
    with pytest.raises(SettingsError, match="TEMPORAL_TLS_CA"):
        Settings.from_env({"TEMPORAL_TLS_CA": str(tmp_path / "missing.pem")})
    with pytest.raises(SettingsError, match="set both or neither"):
        Settings.from_env({"TEMPORAL_TLS_CERT": str(cert)})
    mtls = Settings.from_env({"TEMPORAL_TLS_CERT": str(cert), "TEMPORAL_TLS_KEY": str(key),
                              "TEMPORAL_TLS_CA": str(ca),
                              "TEMPORAL_TLS_SERVER_NAME": "temporal.internal"})
    config = tls_config(mtls)
    assert isinstance(config, TLSConfig)
    assert config.client_cert == cert.read_bytes() and config.domain == "temporal.internal"
    assert config.server_root_ca_cert == ca.read_bytes()
    cloud = Settings.from_env({"TEMPORAL_API_KEY": "cloud-key-123"})
    assert tls_config(cloud) is True and "cloud-key-123" not in repr(cloud)
    assert tls_config(Settings.from_env({})) is False
