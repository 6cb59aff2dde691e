"""The example portal in a real browser: headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium), the portal served by Werkzeug on a free loopback port, and a real openleadr
VEN that registers, polls, answers events and reports telemetry.

Each step saves a screenshot under the test's temporary directory and checks the page's DOM.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from werkzeug.serving import make_server

from example_app.app import create_app
from tests.support.backends import require_server
from tests.support.e2e import stop_client

openleadr = pytest.importorskip("openleadr")

# One pytest-xdist worker runs this whole module (setup.cfg: --dist loadgroup), so that its
# module-scoped browser and portal start once, not once per worker.
pytestmark = pytest.mark.xdist_group("browser")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
VEN_NAME = "north-substation-ven"


def browser_available() -> tuple[bool, str]:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False, "selenium is not installed (pip install -e '.[test]')"
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        return False, f"{', '.join(missing)} missing (apt-get install chromium chromium-driver)"
    return True, ""


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    """The portal on a free 127.0.0.1 port, served by Werkzeug's threaded server."""
    instance = tmp_path_factory.mktemp("portal")
    # Served over plain HTTP as `python -m example_app` serves it, so the VEN has no client
    # certificate to present: the development run's setting (tests/test_identity.py and the
    # deployment tests cover certificates).
    app = create_app({"OPENADR_POLL_FREQUENCY": 1, "PORTAL_REFRESH_SECONDS": 1,
                      "OPENADR_BACKGROUND": "off", "OPENADR_REQUIRE_CLIENT_CERT": False},
                     instance_path=str(instance))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    available, detail = browser_available()
    require_server("chromium and chromedriver", available, detail)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="portal-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Ven:
    """A real openleadr VEN on its own event loop thread, recording what it receives."""

    def __init__(self, base: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.received: list[dict] = []
        self.updated: list[dict] = []
        self.samples = 0
        self.client = self._call(self._make(base))

    def _call(self, coroutine, timeout=30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _make(self, base):
        client = openleadr.OpenADRClient(ven_name=VEN_NAME,
                                         vtn_url=base + "/OpenADR2/Simple/2.0b",
                                         allow_jitter=False)

        async def on_event(event):
            self.received.append(event)
            return "optIn"

        async def on_update_event(event):
            self.updated.append(event)
            return "optIn"

        def read_power():
            # A load that rises and falls, in watts, sampled now.
            self.samples += 1
            return [(datetime.now(timezone.utc), 1000.0 + 250.0 * (self.samples % 4))]

        client.add_handler("on_event", on_event)
        client.add_handler("on_update_event", on_update_event)
        client.add_report(callback=read_power, resource_id="meter-1", measurement="power_real",
                          sampling_rate=timedelta(seconds=1), report_specifier_id="spec-portal",
                          r_id="rid-power", report_duration=timedelta(hours=1))
        return client

    def start(self):
        self._call(self.client.run())

    def stop(self):
        try:
            self._call(stop_client(self.client))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def wait(driver, condition, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition(driver)
        except Exception:  # the element is being swapped by the page's refresh: look again
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s on {driver.current_url}")
        time.sleep(0.2)


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def css_all(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def shot(driver, tmp_path, name):
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot of {name}"
    assert path.stat().st_size > 5000  # a rendered page, not an empty image
    return path


def login(driver, base):
    driver.get(base + "/vens")
    assert "/login" in driver.current_url
    css(driver, "#user").send_keys("operator")
    css(driver, "#password").send_keys("openadr-demo")
    css(driver, "#login-submit").click()
    wait(driver, lambda d: d.current_url.endswith("/vens"), what="login")


def set_value(driver, selector, value):
    # datetime-local and number inputs take keystrokes by locale; setting the value is exact.
    element = css(driver, selector)
    driver.execute_script("arguments[0].value = arguments[1];", element, value)


def event_row(driver, event_id, cell):
    return css(driver, f'tr[data-event-id="{event_id}"] td.{cell}').text


def test_operator_manages_a_real_ven_in_the_browser(portal, browser, tmp_path):
    app, base = portal
    driver = browser
    driver.get(base + "/vens")
    assert "/login" in driver.current_url  # nothing without a login
    assert css(driver, "#login-form") and "Log in" in driver.title
    shot(driver, tmp_path, "0-login")
    login(driver, base)
    assert "VENs" in driver.title
    assert css(driver, "#no-vens").text.startswith("No VEN matches")
    shot(driver, tmp_path, "1-vens-empty")

    ven = Ven(base)
    try:
        ven.start()
        # The page refreshes itself: the VEN appears, online, without a reload.
        row = f'tr[data-ven-name="{VEN_NAME}"]'
        wait(driver, lambda d: css(d, row + " td.state").get_attribute("data-state") == "online",
             what="the VEN shown online")
        assert css(driver, row + " td.registration").text == "registered"
        assert "north" in css(driver, row).text and "pull" in css(driver, row).text
        shot(driver, tmp_path, "2-vens-online")
        ven_id = css(driver, row).get_attribute("data-ven-id")
        assert ven_id == ven.client.ven_id

        # Create an event with the form, prefilled a few minutes ahead.
        css(driver, "#nav-events").click()
        wait(driver, lambda d: d.current_url.endswith("/events"), what="events page")
        prefilled = datetime.strptime(css(driver, "#start").get_attribute("value"),
                                      "%Y-%m-%dT%H:%M").replace(tzinfo=timezone.utc)
        ahead = prefilled - datetime.now(timezone.utc)
        assert timedelta(minutes=3) < ahead <= timedelta(minutes=5)
        css(driver, "#target").send_keys("north")
        set_value(driver, "#duration_minutes", "30")
        set_value(driver, "#level", "2")
        css(driver, "#create-submit").click()
        flash = wait(driver, lambda d: css(d, ".flash.ok").text, what="created message")
        event_id = flash.split()[1]
        assert event_row(driver, event_id, "status") == "far"
        assert event_row(driver, event_id, "level") == "2.0"
        wait(driver, lambda d: ven.received, what="the VEN received the event")
        assert ven.received[0]["event_descriptor"]["event_id"] == event_id
        assert ven.received[0]["event_signals"][0]["intervals"][0]["signal_payload"] == 2.0
        # Its optIn arrives and is counted without a reload.
        wait(driver, lambda d: event_row(d, event_id, "opt-in") == "1", what="optIn counted")
        assert event_row(driver, event_id, "no-answer") == "0"
        shot(driver, tmp_path, "3-events-opted-in")

        # Modify it: the VEN gets modification 1.
        css(driver, f'tr[data-event-id="{event_id}"] a.modify').click()
        wait(driver, lambda d: "/edit" in d.current_url, what="edit page")
        set_value(driver, "#level", "3")
        set_value(driver, "#duration_minutes", "45")
        shot(driver, tmp_path, "4-modify-form")
        css(driver, "#modify-submit").click()
        wait(driver, lambda d: d.current_url.endswith("/events"), what="back to events")
        assert event_row(driver, event_id, "modification") == "1"
        assert event_row(driver, event_id, "level") == "3.0"
        assert event_row(driver, event_id, "duration") == "45"
        wait(driver, lambda d: ven.updated, what="the VEN received the modification")
        assert ven.updated[0]["event_descriptor"]["modification_number"] == 1
        assert ven.updated[0]["event_signals"][0]["intervals"][0]["signal_payload"] == 3.0

        # Cancel it (after the confirmation dialog).
        css(driver, f'tr[data-event-id="{event_id}"] form button').click()
        driver.switch_to.alert.accept()
        wait(driver, lambda d: event_row(d, event_id, "status") == "cancelled",
             what="cancelled status")
        wait(driver, lambda d: any(u["event_descriptor"]["event_status"] == "cancelled"
                                   for u in ven.updated), what="the VEN told of the cancel")
        shot(driver, tmp_path, "5-events-cancelled")

        # The VEN page plots the telemetry the VEN reports (OPENADR_REPORT_POLICY telemetry).
        driver.get(f"{base}/vens/{ven_id}")
        series = 'polyline.series[data-r-id="rid-power"]'
        wait(driver, lambda d: int(css(d, series).get_attribute("data-points")) >= 3,
             timeout=25, what="three report values plotted")
        unit = css(driver, "text.unit").text
        assert unit in ("W", "kW"), unit
        assert css_all(driver, "text.x-tick") and css_all(driver, "text.y-tick")
        assert "time (UTC)" in css(driver, "#report-charts").text
        assert css(driver, "#ven-state").get_attribute("data-state") == "online"
        assert "optIn" in css(driver, f'#ven-events tr[data-event-id="{event_id}"]').text
        assert "spec-portal" in css(driver, "#ven-reports").text
        assert "online" in css(driver, "#ven-history").text
        # The "request report" button asks for the registered telemetry through the API.
        css(driver, ".actions form button").click()
        driver.switch_to.alert.accept()
        message = wait(driver, lambda d: css(d, ".flash.ok").text, what="report requested")
        assert "Telemetry requested" in message
        shot(driver, tmp_path, "6-ven-detail")
    finally:
        ven.stop()


def test_a_bad_event_form_shows_the_error_next_to_the_field(portal, browser, tmp_path):
    app, base = portal
    driver = browser
    driver.get(base + "/events")
    if "/login" in driver.current_url:
        login(driver, base)
        driver.get(base + "/events")

    def submit(target, start, level, error_field):
        css(driver, "#target").clear()
        css(driver, "#target").send_keys(target)
        if start:
            set_value(driver, "#start", start)
        set_value(driver, "#level", level)
        old_page = css(driver, "html")
        css(driver, "#create-submit").click()
        # The form posts and the answer is a new page: read the error from that page, not
        # from the one still shown while it loads.
        wait(driver, lambda d: old_page.id != css(d, "html").id and css(d, f"#{error_field}"),
             what=f"the page with #{error_field}")
        return css(driver, f"#{error_field}").text

    error = submit("west", None, "1", "target-error")
    assert "no group or VEN is named 'west'" in error
    assert "is in the past" in submit("north", "2026-01-01T10:00", "1", "start-error")
    assert css(driver, "#target").get_attribute("value") == "north"  # kept for the next try
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    error = submit("north", later, "7", "level-error")
    assert "rule 9" in error and "0 (normal)" in error
    assert "invalid" in css(driver, "#level").find_element("xpath", "..").get_attribute("class")
    shot(driver, tmp_path, "7-validation-error")
    with app.app_context():
        events = app.extensions["openadr"].vtn.events()
    assert all(e["event_signals"][0]["intervals"][0]["signal_payload"] != 7 for e in events)
