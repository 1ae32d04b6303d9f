"""`/docs` and `/redoc` load nothing from another host, and every asset they use is served.

No Temporal needed: the pages and assets never touch it, and an app built without a
client only connects in its lifespan, which ASGITransport does not run.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from api.app import create_app
from core.settings import Secret, Settings
from tests.conftest import API_KEY

BASE = "http://testserver"
# What each asset kind must be served as, and the least size a real bundle has.
ASSET_KINDS = {
    ".js": ("javascript", 100_000),
    ".css": ("text/css", 10_000),
    ".png": ("image/png", 500),
}


class _References(HTMLParser):
    """The URLs a page makes the browser load: scripts, links and ReDoc's spec."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (tag, name) in {("script", "src"), ("link", "href"),
                                         ("img", "src"), ("redoc", "spec-url")}:
                self.urls.append((tag, value))


def references(html: str) -> list[tuple[str, str]]:
    parser = _References()
    parser.feed(html)
    return parser.urls


def same_origin(url: str, base: str = BASE) -> bool:
    resolved, origin = urlsplit(urljoin(base + "/", url)), urlsplit(base)
    return (resolved.scheme, resolved.netloc) == (origin.scheme, origin.netloc)


@pytest.fixture
async def anon() -> AsyncIterator[httpx.AsyncClient]:
    """The API without credentials: the docs must not need a key."""
    app = create_app(Settings(api_keys=(Secret(API_KEY),)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


@pytest.mark.parametrize(
    ("page", "bundle"),
    [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")],
)
async def test_docs_page_loads_only_from_this_server(
    anon: httpx.AsyncClient, page: str, bundle: str
) -> None:
    response = await anon.get(page)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    html = response.text

    urls = references(html)
    assert urls, html
    foreign = [url for _, url in urls if not same_origin(url)]
    assert not foreign, f"{page} loads from other hosts: {foreign}"
    # Inline code may fetch too (fonts, the schema): no absolute URL anywhere in the page.
    assert not re.findall(r"https?://[^\s\"'<>]+", html), html

    scripts = [url for tag, url in urls if tag == "script"]
    assert any(url.endswith("/" + bundle) for url in scripts), scripts
    assert "/openapi.json" in html


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_every_docs_asset_is_served(anon: httpx.AsyncClient, page: str) -> None:
    html = (await anon.get(page)).text
    assets = [url for tag, url in references(html) if tag != "redoc"]
    assert assets
    for url in assets:
        path = urlsplit(urljoin(BASE + page, url)).path
        assert not path.startswith("/v1"), path  # public, like the page itself
        kind = path[path.rfind("."):]
        assert kind in ASSET_KINDS, path
        content_type, least = ASSET_KINDS[kind]
        response = await anon.get(path)
        assert response.status_code == 200, (path, response.text[:200])
        assert content_type in response.headers["content-type"], (path, response.headers)
        assert len(response.content) >= least, (path, len(response.content))


async def test_bundles_are_the_real_libraries(anon: httpx.AsyncClient) -> None:
    swagger = await anon.get("/docs-assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in swagger.text
    redoc = await anon.get("/docs-assets/redoc.standalone.js")
    assert "Redoc" in redoc.text


async def test_schema_the_pages_load_is_served(anon: httpx.AsyncClient) -> None:
    response = await anon.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert any(path.startswith("/v1/") for path in schema["paths"])
    # The docs routes and assets are not API operations.
    assert not any(path.startswith(("/docs", "/redoc")) for path in schema["paths"])


async def test_links_follow_the_root_path() -> None:
    """Behind a proxy prefix (uvicorn --root-path) the page links stay reachable."""
    app = create_app(Settings(api_keys=(Secret(API_KEY),)))
    transport = httpx.ASGITransport(app=app, root_path="/llama")
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        html = (await client.get("/llama/docs")).text
        urls = [url for _, url in references(html)]
        assert urls and all(url.startswith("/llama/") for url in urls), urls
        assert "'/llama/openapi.json'" in html
        for url in urls:
            assert (await client.get(url)).status_code == 200, url
