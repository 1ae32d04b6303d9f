"""The pages a person inspects runs with, driven in headless Chromium with Playwright.

Shared by `tests/test_browser.py`, which asserts what the pages show, and the README's
screenshots, regenerated with

    python -m tests.browser_pages --screenshots docs/screenshots

Both start a real `loopllama dev` in a temporary directory on free ports (the helpers
of `tests/test_cli.py`), make runs that wait for a human with the offline model, and
open the dev stack's Temporal UI and the API's `/docs`. Chromium is the system's
(`apt-get install chromium`), never a browser Playwright downloads; it only ever
reaches 127.0.0.1 (every other request is refused and recorded).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
from playwright.sync_api import Browser, Page, Route, ViewportSize, expect, sync_playwright

from tests.test_cli import (
    BANNER_KEY,
    cleanup,
    distinct_ports,
    start_dev,
    wait_for_banner,
    wait_until,
)

VIEWPORT: ViewportSize = {"width": 1400, "height": 900}
NAMESPACE = "default"
# Page loads and assertions wait this long at most (milliseconds).
TIMEOUT_MS = 20_000
# List columns added with the UI's column picker (the README names two more, which fit a
# wider window), and the ones removed to make room for them.
SHOWN_COLUMNS = ("LoopLlamaCrew", "LoopLlamaStatus")
HIDDEN_COLUMNS = ("Run ID", "End")
CREW = "launch-notes"
MAILER = "mailer"
SCREENSHOTS = {
    "current_details": "temporal-ui-current-details.png",
    "waiting_runs": "temporal-ui-waiting-runs.png",
    "crew_runs": "temporal-ui-crew-runs.png",
    "docs": "api-docs.png",
}


def find_chromium() -> str | None:
    """The system's Chromium (Debian's `chromium` package, or a distribution's alike)."""
    # Debian's /usr/bin/chromium is a shell wrapper; the binary itself takes flags as is.
    for candidate in ("/usr/lib/chromium/chromium", "chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


# --- the dev stack and the runs to look at ---------------------------------------------


@dataclass(frozen=True)
class Stack:
    """A running `loopllama dev`: its API, its Temporal UI and what its banner said."""

    api: str
    ui: str
    key: str
    banner: str

    def banner_link(self, label: str) -> str:
        """A Temporal UI list link the banner prints, e.g. `waiting for a human`."""
        match = re.search(rf"^\s+{re.escape(label)}:\s+(\S+)\s*$", self.banner, re.MULTILINE)
        assert match, f"no {label!r} link in the banner:\n{self.banner}"
        return match.group(1)

    def list_url(self, query: str) -> str:
        return f"{self.ui}/namespaces/{NAMESPACE}/workflows?query={quote(query)}"

    def api_client(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.api}/v1", timeout=15.0,
                            headers={"Authorization": f"Bearer {self.key}"})


@contextlib.contextmanager
def dev_stack(workdir: Path) -> Iterator[Stack]:
    """`loopllama dev` in `workdir` on free ports; stopped (and reaped) on exit."""
    data_dir = workdir / ".loopllama"
    api_port, temporal_port, ui_port = distinct_ports(3)
    dev = start_dev(workdir, data_dir, api_port, temporal_port, ui_port)
    with cleanup(dev, data_dir=data_dir):
        banner = wait_for_banner(dev)
        match = BANNER_KEY.search(banner)
        assert match, dev.describe()
        try:
            yield Stack(api=f"http://127.0.0.1:{api_port}", ui=f"http://127.0.0.1:{ui_port}",
                        key=match.group(1), banner=banner)
        finally:
            # A clean stop first; `cleanup` kills whatever is still there.
            dev.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                dev.proc.wait(20)


@dataclass(frozen=True)
class Scene:
    """Runs of two crews: two wait for a human (a question, an approval), one is done."""

    stack: Stack
    crew: str
    question_run: str
    question: str
    approval_run: str
    done_run: str


def _create_crew(http: httpx.Client, body: dict[str, object]) -> str:
    created = http.post("/workflows", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["data"]["id"])


def _trigger(http: httpx.Client, workflow_id: str, text: str) -> str:
    triggered = http.post(f"/workflows/{workflow_id}/runs", json={"input": text})
    assert triggered.status_code == 202, triggered.text
    return str(triggered.json()["data"]["id"])


def make_scene(stack: Stack) -> Scene:
    """Create the crews and runs (README "A human in the loop, offline") and wait until
    Temporal's list (visibility) shows each run as it stands."""
    with stack.api_client() as http:
        notes = _create_crew(http, {
            "name": CREW,
            "crew": [{"role": "writer", "model": "loopllama-offline",
                      "instructions": "Write the launch note."}],
            "human_in_the_loop": {"allow_input_requests": True},
        })
        mailer = _create_crew(http, {
            "name": MAILER,
            "crew": [{"role": "writer", "model": "loopllama-offline",
                      "tools": ["send_email"]}],
            "human_in_the_loop": {"approval_required_tools": ["send_email"]},
        })
        question_run = _trigger(http, notes, "Write the launch note; ask me about tone.")
        done_run = _trigger(http, notes, "Write the launch note.")
        approval_run = _trigger(http, mailer, "Email bob@example.com the launch brief.")

        def listed(workflow_id: str, run_id: str, status: str) -> bool:
            rows = http.get(f"/workflows/{workflow_id}/runs").json()["data"]
            return any(row["id"] == run_id and row["status"] == status for row in rows)

        for workflow_id, run_id, status in ((notes, question_run, "waiting_input"),
                                            (notes, done_run, "completed"),
                                            (mailer, approval_run, "waiting_input")):
            wait_until(functools.partial(listed, workflow_id, run_id, status),
                       within=30, what=f"run {run_id} is listed as {status}")
        run = http.get(f"/runs/{question_run}").json()["data"]
        assert run["pending"]["kind"] == "input", run
        return Scene(stack=stack, crew=CREW, question_run=question_run,
                     question=run["pending"]["prompt"], approval_run=approval_run,
                     done_run=done_run)


# --- the browser -----------------------------------------------------------------------


@dataclass
class LocalOnly:
    """A route handler that lets a page reach 127.0.0.1 and nothing else."""

    refused: list[str] = field(default_factory=list)

    def __call__(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.refused.append(url)  # e.g. the Temporal UI's news feed
            route.abort()


@contextlib.contextmanager
def chromium(executable: str) -> Iterator[Browser]:
    expect.set_options(timeout=TIMEOUT_MS)  # its default, 5 s, is short for a loaded CI
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            # Belt and braces for the route handler: no name resolves but 127.0.0.1.
            args=["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"],
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def new_page(browser: Browser, local_only: LocalOnly | None = None) -> Iterator[Page]:
    """A page in a fresh context (its own local storage, so its own UI columns)."""
    context = browser.new_context(viewport=VIEWPORT, timezone_id="UTC", locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/*", local_only or LocalOnly())
    try:
        yield context.new_page()
    finally:
        context.close()


# --- the pages; each waits until it shows what a person looks for ------------------------


def open_current_details(page: Page, scene: Scene) -> None:
    """The waiting run in the Temporal UI, on its "User Metadata" tab: Current Details
    say it waits for an answer to the question, and how to answer."""
    stack = scene.stack
    page.goto(f"{stack.ui}/namespaces/{NAMESPACE}/workflows/{scene.question_run}")
    page.get_by_role("tab", name="User Metadata").click()
    expect(page).to_have_url(re.compile(r"/user-metadata$"))
    heading = page.get_by_role("heading", name="Current Details", exact=True)
    expect(heading).to_be_visible()
    # The UI renders the Markdown in an iframe below the heading.
    section = heading.locator("xpath=ancestor::*[.//iframe][1]")
    details = section.frame_locator("iframe").locator("body")
    expect(details).to_contain_text("Waiting for a human: a question")
    expect(details).to_contain_text(scene.question)
    expect(details).to_contain_text(f"POST /v1/runs/{scene.question_run}/respond")


def show_columns(page: Page) -> None:
    """Add the LoopLlama columns with the list's column picker, as the README says."""
    page.get_by_test_id("workflows-summary-table-configuration-button").click()
    drawer = page.locator("#workflows-table-configuration-drawer")
    expect(drawer.get_by_role("heading", name="Configure Workflows Table")).to_be_visible()
    for label in HIDDEN_COLUMNS:
        remove = drawer.get_by_test_id(f"orderable-list-item-{label}-remove-button")
        if remove.count():
            remove.click()
    for name in SHOWN_COLUMNS:
        # Listed once the UI knows the namespace's search attributes, in view or not.
        expect(drawer.get_by_test_id(f"orderable-list-item-{name}")).to_be_visible()
        add = drawer.get_by_test_id(f"orderable-list-item-{name}-add-button")
        if add.count():
            add.click()
            # Added last; one step up puts it before Start, in sight of a narrow window.
            drawer.get_by_test_id(f"orderable-list-item-{name}-move-up-button").click()
    drawer.get_by_test_id("drawer-close-button").click()
    expect(drawer).to_be_hidden()  # it fades out: wait, or a screenshot shows its ghost
    for name in SHOWN_COLUMNS:
        expect(page.get_by_role("columnheader", name=name)).to_be_visible()


def _expect_rows(page: Page, shown: dict[str, tuple[str, str]], absent: tuple[str, ...]) -> None:
    """Rows of `shown` (run id -> crew, status) are listed with those cells; none of
    `absent` is."""
    for run_id, cells in shown.items():
        row = page.get_by_role("row").filter(has_text=run_id)
        expect(row).to_have_count(1)
        for cell in cells:
            expect(row.get_by_role("cell", name=cell, exact=True)).to_be_visible()
    for run_id in absent:
        expect(page.get_by_role("row").filter(has_text=run_id)).to_have_count(0)


def open_waiting_runs(page: Page, scene: Scene) -> None:
    """The "waiting for a human" list `loopllama dev` prints, with the crew column."""
    page.goto(scene.stack.banner_link("waiting for a human"))
    show_columns(page)
    _expect_rows(page, {scene.question_run: (scene.crew, "waiting_input"),
                        scene.approval_run: (MAILER, "waiting_input")},
                 absent=(scene.done_run,))


def open_crew_runs(page: Page, scene: Scene) -> None:
    """The list filtered by crew name: this crew's runs, and not the other crew's."""
    page.goto(scene.stack.list_url(f"LoopLlamaCrew = '{scene.crew}'"))
    show_columns(page)
    _expect_rows(page, {scene.question_run: (scene.crew, "waiting_input"),
                        scene.done_run: (scene.crew, "completed")},
                 absent=(scene.approval_run,))


def open_docs(page: Page, scene: Scene) -> None:
    """The API's Swagger UI lists the endpoints (its assets come from the API itself)."""
    page.goto(f"{scene.stack.api}/docs")
    docs = page.locator("#swagger-ui")
    for text in ("/v1/workflows", "/v1/workflows/{workflow_id}/runs",
                 "/v1/runs/{run_id}/respond", "/v1/runs/{run_id}/events"):
        expect(docs).to_contain_text(text)
    expect(page.locator('[data-path="/v1/runs/{run_id}/events"]').first).to_be_visible()


PAGES = {
    "current_details": open_current_details,
    "waiting_runs": open_waiting_runs,
    "crew_runs": open_crew_runs,
    "docs": open_docs,
}


def take_screenshots(browser: Browser, scene: Scene, out_dir: Path) -> list[Path]:
    """One PNG of each page once it shows what it should; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, open_page in PAGES.items():
        with new_page(browser) as page:
            open_page(page, scene)
            path = out_dir / SCREENSHOTS[name]
            page.screenshot(path=str(path))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.browser_pages",
        description="Start `loopllama dev` in a temporary directory, make runs that wait "
                    "for a human and save screenshots of the pages that show them.",
    )
    parser.add_argument("--screenshots", type=Path, required=True, metavar="DIR",
                        help="where to write the PNG files (docs/screenshots for the README)")
    parser.add_argument("--chromium", default=find_chromium(),
                        help="the Chromium binary (default: the system's)")
    args = parser.parse_args(argv)
    if not args.chromium:
        parser.error("no Chromium found: apt-get install chromium, or pass --chromium")
    with tempfile.TemporaryDirectory(prefix="loopllama-screens-") as workdir, \
            dev_stack(Path(workdir)) as stack, chromium(args.chromium) as browser:
        for path in take_screenshots(browser, make_scene(stack), args.screenshots):
            print(f"{path}  ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
