"""A real headless Chromium for page tests (Debian's chromium and chromium-driver, selenium).

Use the `browser` fixture; tests that need it are marked `browser` and skipped with a reason
where Chromium is not installed (`.ci/run` installs it). Besides the driver it offers what page
tests check every time: the console's errors and every URL the page fetched.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

# Without the background-networking flags Chromium phones home at start, and this machine's
# closed network refuses it loudly; none of them changes how a page renders.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--window-size=1280,900",
)


class Browser:
    """A selenium driver plus the console and network logs of what it loaded."""

    def __init__(self, driver) -> None:
        self.driver = driver

    def console_errors(self) -> list[dict]:
        return [e for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def requested_urls(self) -> list[str]:
        """Every URL requested since the last call (the performance log is drained)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def foreign_requests(self, origin: str) -> list[str]:
        """URLs fetched from anywhere but `origin` (scheme://host:port); data: and blob: aside,
        and Chromium's own pages (chrome://, loaded by the browser itself, never by a page)."""
        own = urlsplit(origin)
        return [
            url
            for url in self.requested_urls()
            if urlsplit(url).scheme
            not in ("data", "blob", "about", "chrome", "chrome-error", "chrome-untrusted")
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (own.scheme, own.netloc)
        ]


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="gf-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
