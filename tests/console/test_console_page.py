"""The console page itself, served by a plain static file server with none of cnnserve's routes behind it:
it must still render, label every control, describe every image, and say in words that the server is not
answering, never a blank panel. (tests/console/test_console_server.py runs it against a real server.)"""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from support import ROOT

CONSOLE = ROOT / "server" / "http" / "console"


@pytest.fixture(scope="module")
def static_url():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(CONSOLE))
    handler.func.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    server.server_close()


def test_without_the_routes_the_page_says_so_in_words(tab, static_url):
    page = tab.page
    page.goto(static_url)
    message = page.locator("#models-message")
    message.filter(has_text="Could not list the models").wait_for()
    assert "/v2/repository/index" in message.inner_text()
    assert "not answering" in page.locator("#server-status").inner_text()
    assert tab.page_errors == []  # the page's own code never threw


def test_every_control_is_labelled_and_every_image_described(tab, static_url):
    page = tab.page
    page.goto(static_url)
    page.locator("#samples img").first.wait_for()
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button')]
            .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.textContent.trim())
            .map((c) => c.id || c.outerHTML)"""
    )
    assert unlabelled == []
    no_alt = page.evaluate("() => [...document.querySelectorAll('img')].filter((i) => !i.hasAttribute('alt')).length")
    assert no_alt == 0
    # The ten sample digits ship with the page and decode as 28x28 images.
    sizes = page.evaluate(
        """async () => Promise.all([...document.querySelectorAll('#samples img')].map(async (i) => {
            await i.decode(); return [i.naturalWidth, i.naturalHeight]; }))"""
    )
    assert sizes == [[28, 28]] * 10


def test_it_fits_a_phone_and_works_by_keyboard(tab, static_url):
    page = tab.page
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(static_url)
    page.locator("#samples img").first.wait_for()
    # Nothing wider than the screen: no sideways scrolling of the whole page.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    # Tab reaches the skip link, then the page's controls, in order.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip"
    reached = set()
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("() => document.activeElement.id || document.activeElement.dataset.sample || ''"))
    assert {"models-refresh", "topk-input", "file-input", "0", "9", "opacity"} <= reached
