"""The API docs in a real headless Chromium: rendered offline, under the CSP, from one origin."""

import json
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers import DOCUMENTED_PATHS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _operations(browser) -> list[str]:
    blocks = browser.driver.find_elements(By.CSS_SELECTOR, ".opblock .opblock-summary-path")
    return [b.get_attribute("data-path") or b.text for b in blocks]


def test_swagger_ui_lists_every_operation_with_nothing_from_another_origin(live_server, browser):
    browser.requested_urls()  # what Chromium fetched for itself at start-up
    browser.driver.get(f"{live_server.url}/api/docs/")
    WebDriverWait(browser.driver, 30).until(lambda _: len(_operations(browser)) >= 9)
    paths = _operations(browser)
    assert {p.replace("\u200b", "") for p in paths} >= DOCUMENTED_PATHS
    assert [e["message"] for e in browser.console_errors()] == []
    assert browser.foreign_requests(live_server.url) == []


def test_redoc_renders_the_reference_with_nothing_from_another_origin(live_server, browser):
    browser.requested_urls()
    browser.driver.get(f"{live_server.url}/api/redoc/")
    WebDriverWait(browser.driver, 30).until(
        lambda d: "Increment a counter" in d.find_element(By.TAG_NAME, "body").text
    )
    errors = [e["message"] for e in browser.console_errors()]
    # Redoc's bundle always adds its maker's logo from a CDN; the CSP blocks it before it leaves
    # the browser, and Chromium reports the block. Nothing else may go wrong, or go elsewhere.
    assert all("cdn.redoc.ly/redoc/logo-mini.svg" in e and "blocked" in e for e in errors), errors
    sent, blocked = {}, set()
    for entry in browser.driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            sent[params["requestId"]] = params["request"]["url"]
        elif message.get("method") == "Network.loadingFailed" and params.get("blockedReason"):
            blocked.add(params["requestId"])
    own = urlsplit(live_server.url).netloc
    foreign = {rid: url for rid, url in sent.items() if urlsplit(url).scheme in ("http", "https")}
    foreign = {rid: url for rid, url in foreign.items() if urlsplit(url).netloc != own}
    assert set(foreign) <= blocked, foreign


def test_the_admin_works_under_the_csp(live_server, browser):
    from django.contrib.auth.models import User

    User.objects.create_superuser("root", "root@example.com", "right-password")
    driver = browser.driver
    browser.requested_urls()
    driver.get(f"{live_server.url}/admin/login/")
    driver.find_element(By.NAME, "username").send_keys("root")
    driver.find_element(By.NAME, "password").send_keys("right-password")
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(driver, 20).until(lambda d: "Site administration" in d.page_source)
    driver.get(f"{live_server.url}/admin/apikeys/apikey/add/")
    driver.find_element(By.NAME, "name").send_keys("from-the-browser")
    driver.find_element(By.NAME, "_save").click()
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "api-key"))
    raw = driver.find_element(By.ID, "api-key").text
    assert raw.startswith("gf_")
    driver.refresh()
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.ID, "key-gone"))
    assert raw not in driver.page_source
    driver.get(f"{live_server.url}/admin/apikeys/apikey/")
    WebDriverWait(driver, 20).until(lambda d: "from-the-browser" in d.page_source)
    assert [e["message"] for e in browser.console_errors()] == []
    assert browser.foreign_requests(live_server.url) == []
