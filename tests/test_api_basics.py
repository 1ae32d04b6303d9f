"""Auth, the error envelope, body limits, unknown routes and health."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from temporalio.client import Client

from api.app import create_app
from api.body_limit import MAX_BODY_BYTES
from core.settings import Secret, Settings
from tests.conftest import API_KEY, free_port


def assert_envelope(response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    assert "Traceback" not in response.text
    return str(body["error"]["message"])


async def test_missing_key_is_401_in_envelope(anon_api: httpx.AsyncClient) -> None:
    response = await anon_api.get("/v1/workflows")
    message = assert_envelope(response, 401, "authentication_error")
    assert "Bearer" in message
    assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_key_is_401(anon_api: httpx.AsyncClient) -> None:
    response = await anon_api.get(
        "/v1/workflows", headers={"Authorization": "Bearer not-the-key"}
    )
    assert_envelope(response, 401, "authentication_error")
    basic = await anon_api.get("/v1/workflows", headers={"Authorization": f"Basic {API_KEY}"})
    assert_envelope(basic, 401, "authentication_error")


async def test_right_key_is_accepted(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/workflows")
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["data"], list)


async def test_any_of_several_keys_is_accepted(temporal, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    multi = Settings(
        api_keys=(Secret("first-key"), Secret("second-key")),
        temporal_address=settings.temporal_address,
        temporal_task_queue=settings.temporal_task_queue,
    )
    app = create_app(multi, temporal)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        for key, status in (("first-key", 200), ("second-key", 200), ("third-key", 401)):
            response = await client.get(
                "/v1/workflows", headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == status, (key, response.text)


async def test_unknown_route_is_404_envelope(api: httpx.AsyncClient) -> None:
    assert_envelope(await api.get("/v1/nothing-here"), 404, "not_found_error")
    assert_envelope(await api.get("/nothing-here"), 404, "not_found_error")


async def test_unknown_v1_route_without_key_is_401(anon_api: httpx.AsyncClient) -> None:
    assert_envelope(await anon_api.get("/v1/nothing-here"), 401, "authentication_error")


async def test_validation_error_is_400_not_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/workflows", json={"name": "x", "crew": [], "bogus": 1})
    message = assert_envelope(response, 400, "invalid_request_error")
    assert "bogus" in message
    assert "crew" in message


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/workflows", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    message = assert_envelope(response, 400, "invalid_request_error")
    assert "JSON" in message


async def test_oversized_body_is_413(api: httpx.AsyncClient) -> None:
    payload = b'{"name": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    response = await api.post(
        "/v1/workflows", content=payload, headers={"Content-Type": "application/json"}
    )
    assert_envelope(response, 413, "request_too_large")


async def test_oversized_chunked_body_is_413(api: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * (MAX_BODY_BYTES // 10)

    response = await api.post(
        "/v1/workflows", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_envelope(response, 413, "request_too_large")


async def test_health_reports_temporal_reachable(anon_api: httpx.AsyncClient) -> None:
    response = await anon_api.get("/health")
    assert response.status_code == 200
    assert response.json()["temporal"]["reachable"] is True


async def test_temporal_down_gives_503(settings: Settings) -> None:
    # Nothing listens on this port: the app starts anyway and answers 503.
    down = replace(settings, temporal_address=f"127.0.0.1:{free_port()}")
    app = create_app(down)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    ) as client:
        response = await client.get("/v1/workflows")
        message = assert_envelope(response, 503, "service_unavailable")
        assert "Temporal" in message
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["temporal"]["reachable"] is False


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
async def test_docs_are_served(anon_api: httpx.AsyncClient, path: str) -> None:
    assert (await anon_api.get(path)).status_code == 200


async def test_a_root_path_prefix_does_not_skip_authentication(
    temporal: Client, settings: Settings
) -> None:
    # Behind a proxy that strips /llama, uvicorn passes root_path="/llama" and the full
    # path; the key is still required for /v1.
    app = create_app(settings, temporal)
    transport = httpx.ASGITransport(app=app, root_path="/llama")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as anon:
        response = await anon.get("/llama/v1/workflows")
    assert response.status_code == 401, response.text
    assert response.json()["error"]["type"] == "authentication_error"
