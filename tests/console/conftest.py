"""The console's browser harness: a real headless Chromium from the system's packages, driven by Playwright.

Nothing downloads a browser: Playwright starts the system's `chromium` (Debian's package; CNNSERVE_CHROMIUM names
another binary). Without Playwright or a browser the tests here skip with a note, never fail. Each test gets a new
tab (so a fresh sessionStorage) that records console errors and uncaught exceptions, and leaves a screenshot in
out/test-artifacts/console/ (CNNSERVE_TEST_ARTIFACTS names another folder).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import ROOT

# Flags that keep Chromium off the network and out of the machine's state (the server runs offline).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    named = os.environ.get("CNNSERVE_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("CNNSERVE_TEST_ARTIFACTS", ROOT / "out" / "test-artifacts")) / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


_NOTE: list[str] = []  # what the terminal summary says about the browser


def pytest_terminal_summary(terminalreporter):
    if _NOTE:
        terminalreporter.write_line(f"console: {_NOTE[0]}")


def _skip(why: str):
    _NOTE[:] = [f"browser tests skipped: {why}"]
    pytest.skip(_NOTE[0])


@pytest.fixture(scope="module")
def browser_context():
    """One Chromium per test module, with a new empty profile (--user-data-dir) that is removed afterwards.

    Per module, not per session: Playwright's sync API keeps an event loop running on the main thread while it
    is open, and any asyncio.run() in a later module of the same process would fail.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip("Playwright is not installed (the [dev] extra has it)")
    executable = chromium_path()
    if executable is None:
        _skip("no Chromium here (apt-get install chromium; .ci/run does it where it is root)")
    profile = tempfile.mkdtemp(prefix="cnnserve-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        _NOTE[:] = [f"browser tests ran in {executable} {context.browser.version if context.browser else ''}".rstrip()]
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Tab:
    """A browser tab and what went wrong in it: console errors and uncaught exceptions, in the page's words."""

    page: object
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        path = artifacts_dir() / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def tab(browser_context, request):
    page = browser_context.new_page()
    page.set_default_timeout(90_000)
    tab = Tab(page)
    page.on("console", lambda m: tab.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: tab.page_errors.append(str(e)))
    yield tab
    try:
        tab.screenshot(re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name))
    finally:
        page.close()
