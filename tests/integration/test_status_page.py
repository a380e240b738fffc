"""The admin status page, served by a real balancer and read in a real headless Chromium.

The browser test needs Debian's ``chromium`` and ``chromedriver`` (``apt-get install
chromium chromium-driver``; ``scripts/test`` installs them when it runs as root, as on
CI) and fails, saying what to install, when they are missing.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.conftest import StartBalancer
from tests.support.backend import (
    RecordedRequest,
    ScriptedBackend,
    fixed,
    hold_until,
)
from tests.support.client import fetch
from tests.support.polling import wait_for

ACTIVE = {
    "PREFORK_LB_HEALTH_CHECK": "1",
    "PREFORK_LB_HEALTH_INTERVAL": "0.2",
    "PREFORK_LB_HEALTH_PATH": "/health",
}
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium driven through Debian's chromedriver, with a throwaway profile."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail(
            "needs Debian's chromium and chromedriver on PATH "
            "(apt-get install -y chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


def _to_slow(backend: ScriptedBackend) -> list[RecordedRequest]:
    return [r for r in backend.requests if r.target == "/slow"]


def _rows(driver: webdriver.Chrome) -> dict[str, WebElement]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#backends tbody tr")
    return {str(row.get_attribute("data-url")): row for row in rows}


def _cell(row: WebElement, name: str) -> str:
    return str(row.find_element(By.CSS_SELECTOR, f"td.{name}").text)


def test_status_page_in_a_browser_shows_state_reasons_and_in_flight(
    three_backends: list[ScriptedBackend],
    start_balancer: StartBalancer,
    browser: webdriver.Chrome,
) -> None:
    """A browser shows one row per backend, the failing one DOWN with why, and live in-flight."""
    slow, other, failing = three_backends
    failing.route("/health", fixed(500, "Internal Server Error"))
    lb = start_balancer([b.url for b in three_backends], workers=2, env=ACTIVE)
    page = f"{lb.url}/_prefork_lb/"

    def failing_shown_down(driver: webdriver.Chrome) -> bool:
        driver.get(page)
        row = _rows(driver).get(failing.url)
        return row is not None and _cell(row, "state").startswith("DOWN")

    WebDriverWait(browser, 10, poll_frequency=0.2).until(failing_shown_down)
    assert browser.title == "prefork_lb: 3 backends: 2 up, 1 down"
    summary = browser.find_element(By.ID, "summary").text
    assert summary == "3 backends: 2 up, 1 down"
    assert browser.find_element(By.ID, "policy").text == "round_robin"
    rows = _rows(browser)
    assert list(rows) == [slow.url, other.url, failing.url]
    assert [_cell(rows[b.url], "state") for b in (slow, other)] == ["UP", "UP"]
    reason = _cell(rows[failing.url], "reason")
    assert "failed health checks in a row" in reason
    assert "500" in reason
    assert [_cell(row, "in-flight") for row in rows.values()] == ["0", "0", "0"]
    assert [_cell(row, "requests") for row in rows.values()] == ["0", "0", "0"]

    # Hold two requests on one backend: round robin alternates between the two up ones,
    # so keep sending until the slow one holds two (the other answers at once).
    release = threading.Event()
    slow.route("/slow", hold_until(release))
    with ThreadPoolExecutor(max_workers=8) as pool:
        try:
            replies = []
            for _ in range(8):
                replies.append(pool.submit(fetch, lb.port, "/slow"))
                wait_for(
                    lambda: len(_to_slow(slow)) + len(_to_slow(other)) == len(replies),
                    "the request reaching a backend",
                )
                if len(_to_slow(slow)) == 2:
                    break
            assert len(_to_slow(slow)) == 2
            wait_for(lambda: sum(not r.done() for r in replies) == 2, "the others answered")

            def in_flight_shown(driver: webdriver.Chrome) -> bool:
                driver.refresh()
                rows = _rows(driver)
                counts = [_cell(rows[b.url], "in-flight") for b in three_backends]
                return counts == ["2", "0", "0"]

            WebDriverWait(browser, 10, poll_frequency=0.2).until(in_flight_shown)
        finally:
            release.set()
        assert all(r.result().status == 200 for r in replies)

    def requests_shown(driver: webdriver.Chrome) -> bool:
        driver.refresh()
        rows = _rows(driver)
        counts = [_cell(rows[b.url], "requests") for b in three_backends]
        return counts == ["2", str(len(_to_slow(other))), "0"]

    WebDriverWait(browser, 10, poll_frequency=0.2).until(requests_shown)


@pytest.mark.parametrize("target", ["/_prefork_lb", "/_prefork_lb/"])
def test_status_page_is_html_that_is_never_cached(
    target: str, three_backends: list[ScriptedBackend], start_balancer: StartBalancer
) -> None:
    """GET and HEAD on the admin root answer the HTML page, uncached; POST is 405."""
    backend = three_backends[0]
    lb = start_balancer([backend.url], workers=1)
    reply = fetch(lb.port, target)
    assert reply.status == 200
    assert reply.header("Content-Type") == ["text/html; charset=utf-8"]
    assert reply.header("Cache-Control") == ["no-store"]
    assert reply.body.startswith(b"<!DOCTYPE html>")
    assert backend.url.encode() in reply.body
    head = fetch(lb.port, target, method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert head.header("Content-Length") == reply.header("Content-Length")
    post = fetch(lb.port, target, method="POST", body=b"")
    assert (post.status, post.header("Allow")) == (405, ["GET, HEAD"])
    assert backend.requests == []
