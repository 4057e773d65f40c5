"""The live web view in a real browser (Debian's chromium through chromedriver, installed by
dev/setup.sh) against the API on a real uvicorn over the real PostgreSQL and Redis: it shows
the clusters the API lists, and updates when a new change event arrives. A screenshot is
kept in var/test-artifacts/."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By

from api.app import create_app
from tests.api.conftest import READ_TOKEN, Populated, api_settings, auth, serve
from tests.conftest import ROOT, Services, wait_until

ARTIFACTS = ROOT / "var" / "test-artifacts"


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1400,1500")
    drv = webdriver.Chrome(service=ChromeService("/usr/bin/chromedriver"), options=opts)
    try:
        yield drv
    finally:
        # what the page looked like at the end (also when the test failed), to look at
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(ARTIFACTS / f"{request.node.name}.png"))
        (ARTIFACTS / f"{request.node.name}.html").write_text(drv.page_source)
        drv.quit()


def _texts(drv: Any, css: str) -> list[str]:
    """Read in the page in one go: the page redraws its tables every poll, so elements found
    one call earlier may be gone."""
    out: list[str] = drv.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText);", css
    )
    return out


def test_the_web_view_shows_the_api_and_updates_live(
    browser: Any, populated: Populated, services: Services
) -> None:
    app = create_app(api_settings(populated, services, job_runners=0, cache_seconds=0))
    with serve(app) as base:
        h = auth(READ_TOKEN)
        scope = httpx.get(f"{base}/api/v1/statistics", headers=h).json()["scopes"][0]["scope"]
        want = httpx.get(
            f"{base}/api/v1/clusters",
            params={"scope": scope, "sort": "size", "limit": 10},
            headers=h,
        ).json()["items"]
        # without a token the page asks for one and shows no data
        browser.get(base + "/")
        wait_until(lambda: browser.find_element(By.ID, "login").is_displayed(), 30, "login")
        browser.find_element(By.ID, "token").send_keys(READ_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#login button").click()

        def biggest() -> list[str]:
            return _texts(browser, "#biggest tbody tr td:first-child")

        wait_until(lambda: len(biggest()) == len(want), 60, "the biggest clusters listed")
        assert biggest() == [c["cluster_label"] for c in want]
        assert browser.find_element(By.ID, "scope").get_attribute("value") == scope
        wait_until(lambda: _texts(browser, "#events li"), 30, "change events shown")
        assert browser.find_element(By.ID, "health").text == "healthy"
        # a new event reaches the page by itself (polling)
        target = want[0]["cluster_id"]

        async def add() -> None:
            conn = await asyncpg.connect(populated.dsn)
            try:
                await conn.execute(
                    "INSERT INTO cluster_events (event_id, cluster_id, cluster_type, kind,"
                    " related_ids, event_time, sequence, payload) VALUES ('live-1',"
                    " 'freshly-split-cluster', $1, 'split', $2, 1765900000, 999999,"
                    " '{\"size\": 7}'::jsonb)",
                    scope,
                    [target],
                )
            finally:
                await conn.close()

        asyncio.run(add())
        wait_until(
            lambda: any("freshly-split-cluster" in t for t in _texts(browser, "#events li")),
            30,
            "the new event on the page",
        )
        # the map and the size chart draw: pick the biggest cluster
        browser.execute_script("document.querySelector('#biggest tbody tr').click()")
        wait_until(
            lambda: browser.find_element(By.ID, "picked").text == target, 30, "picked cluster"
        )
        drawn = browser.execute_script(
            "const c = document.getElementById('map').getContext('2d');"
            "const d = c.getImageData(0, 0, 520, 360).data; let n = 0;"
            "for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;"
        )
        assert drawn > 200  # centroids were painted
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "web-view.png"))
        logs = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert logs == []
