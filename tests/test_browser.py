"""What a person sees in a real browser: the dev stack's Temporal UI and the API's /docs.

Headless Chromium (Debian's `chromium` package; CI installs it) driven with Playwright
against a real `loopllama dev`; the pages themselves live in `tests/browser_pages.py`,
which also regenerates the README's screenshots (each test here takes its page's too).
Skipped, saying why, on a machine without Chromium or without the `playwright` package.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip(
    "playwright.sync_api",
    reason="the playwright package is not installed (pip install -e '.[test]')",
)

from playwright.sync_api import Browser, Page  # noqa: E402

from tests import browser_pages as pages  # noqa: E402

CHROMIUM = pages.find_chromium()

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium binary (apt-get install chromium; .ci/run does it)",
    ),
    # Starting the dev stack and making the runs counts towards the first test's time.
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pages.Scene]:
    with pages.dev_stack(tmp_path_factory.mktemp("browser")) as stack:
        yield pages.make_scene(stack)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    with pages.chromium(CHROMIUM) as browser:
        yield browser


@pytest.fixture
def local_only() -> pages.LocalOnly:
    return pages.LocalOnly()


@pytest.fixture
def page(browser: Browser, local_only: pages.LocalOnly) -> Iterator[Page]:
    with pages.new_page(browser, local_only) as page:
        yield page


def assert_screenshot(page: Page, name: str, out_dir: Path) -> None:
    """The page as the README shows it: a viewport-sized PNG of a reasonable size."""
    path = out_dir / pages.SCREENSHOTS[name]
    page.screenshot(path=str(path))
    png = path.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n"), path
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (pages.VIEWPORT["width"], pages.VIEWPORT["height"]), path
    assert len(png) < 300_000, f"{path.name} is {len(png)} bytes"


def test_a_waiting_run_shows_its_question_in_current_details(
    page: Page, scene: pages.Scene, tmp_path: Path
) -> None:
    pages.open_current_details(page, scene)
    assert_screenshot(page, "current_details", tmp_path)


def test_the_waiting_list_loopllama_dev_prints_shows_both_pauses_with_their_crews(
    page: Page, scene: pages.Scene, tmp_path: Path
) -> None:
    link = scene.stack.banner_link("waiting for a human")
    assert link.startswith(f"{scene.stack.ui}/namespaces/default/workflows?query="), link
    pages.open_waiting_runs(page, scene)
    assert_screenshot(page, "waiting_runs", tmp_path)


def test_the_list_filtered_by_crew_name_shows_that_crews_runs_only(
    page: Page, scene: pages.Scene, tmp_path: Path
) -> None:
    pages.open_crew_runs(page, scene)
    assert_screenshot(page, "crew_runs", tmp_path)


def test_docs_list_the_endpoints_with_nothing_fetched_from_outside(
    page: Page, scene: pages.Scene, local_only: pages.LocalOnly, tmp_path: Path
) -> None:
    pages.open_docs(page, scene)
    assert local_only.refused == []
    assert_screenshot(page, "docs", tmp_path)
