"""
The example page in a real browser: headless Chromium (Debian's
C{chromium} and C{chromium-driver}, which C{scripts/install} installs)
driven with selenium, against a real server and shim on the real
PostgreSQL and RabbitMQ.

Locally the test skips when Chromium or its driver is missing; under CI
(C{CI=true}) that is a failure.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

from tests.integration import waitFor
from tests.test_integration import ServiceTestCase, iso, when

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def requireBrowser() -> None:
    """
    Skip (or, under CI, fail) without Chromium, its driver and selenium.
    """
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install .[test])")
    if missing:
        message = f"missing {', '.join(missing)}; scripts/install installs them"
        if os.environ.get("CI") == "true":
            raise AssertionError(message + " (under CI this fails instead of skipping)")
        raise SkipTest(message)


def startBrowser() -> Any:
    """
    @return: A selenium driver of a fresh headless Chromium.  Blocks: call
        it in a thread.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in [
        "--headless=new",
        # Root in a container has no user namespace to sandbox with.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1000,800",
    ]:
        options.add_argument(argument)
    # Naming the driver keeps selenium from looking for one to download.
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class ExamplePageTests(ServiceTestCase):
    timeout = 60

    def setUp(self) -> None:
        super().setUp()
        requireBrowser()

    def inBrowser(self, function: Callable[..., Any], *args: Any) -> Deferred:
        """
        Run a (blocking) selenium call in a thread, so that the reactor
        goes on serving the page it asks for.
        """
        return deferToThread(function, *args)

    @inlineCallbacks
    def waitForPage(self, predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
        """
        Poll C{predicate} (run in a thread) until it returns something true.
        """
        deadline = reactor.seconds() + timeout
        while True:
            result = yield self.inBrowser(predicate)
            if result:
                return result
            if reactor.seconds() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            yield deferLater(reactor, 0.1, lambda: None)

    @inlineCallbacks
    def test_subscribeAndSeeUpdate(self) -> None:
        """
        The page served at a feed's path connects to that feed; subscribing
        through its form and then committing a row shows the update on the
        page; after the server drops the connection the page reconnects,
        subscribes again with C{after} set to the last seq it saw, and shows
        the next update; unsubscribing empties the list held.
        """
        from selenium.webdriver.common.by import By

        exchange = self.exchange("browser")
        database = self.database()
        port = yield self.startServer([("/", exchange)])
        self.startShim(database, exchange)
        driver = yield self.inBrowser(startBrowser)
        self.addCleanup(lambda: self.inBrowser(driver.quit))

        def text(elementId: str) -> str:
            return str(driver.find_element(By.ID, elementId).text)

        yield self.inBrowser(driver.get, f"http://127.0.0.1:{port}/")
        self.assertEqual(driver.title, "Bugzfeed")
        self.assertEqual(text("url"), f"ws://127.0.0.1:{port}/")
        yield self.waitForPage(lambda: text("status") == "open", "the page to connect")

        def subscribe() -> None:
            driver.find_element(By.ID, "bugs").send_keys("4242")
            driver.find_element(By.ID, "subscribe").click()

        yield self.inBrowser(subscribe)
        yield self.waitForPage(lambda: text("subscriptions") == "4242", "the subscription")
        self.assertEqual(self.server.feeds[0].registry.bugCount, 1)

        database.insert(4242, when(7))
        shown = yield self.waitForPage(
            lambda: driver.find_elements(By.CSS_SELECTOR, "#updates li[data-bug='4242']"),
            "the update to be shown",
        )
        line = yield self.inBrowser(lambda: shown[0].text)
        self.assertIn(f"bug 4242 changed at {iso(when(7))}Z", line)
        self.assertNotEqual(text("lastseq"), "none")

        # Record what the page sends from now on, then drop its connection
        # the way a restarting server does.
        yield self.inBrowser(
            driver.execute_script,
            "window.sentFrames = []; var send = WebSocket.prototype.send;"
            " WebSocket.prototype.send = function (data) {"
            " window.sentFrames.push(JSON.parse(data)); return send.call(this, data); };",
        )
        lastSeq = int(text("lastseq"))
        yield self.server.factory.closeAll(5)
        sent = yield self.waitForPage(
            lambda: [
                frame
                for frame in driver.execute_script("return window.sentFrames")
                if frame.get("command") == "subscribe"
            ],
            "the page to reconnect and subscribe again",
        )
        self.assertEqual(sent[0]["bugs"], [4242])
        self.assertEqual(sent[0]["after"], lastSeq)
        yield self.waitForPage(lambda: text("status") == "open", "the page to be open again")
        yield waitFor(lambda: self.server.feeds[0].registry.bugCount == 1, what="resubscribing")
        database.insert(4242, when(8))
        yield self.waitForPage(
            lambda: len(driver.find_elements(By.CSS_SELECTOR, "#updates li[data-bug='4242']")) == 2,
            "the update after reconnecting",
        )

        def unsubscribe() -> None:
            field = driver.find_element(By.ID, "bugs")
            field.clear()
            field.send_keys("4242")
            driver.find_element(By.ID, "unsubscribe").click()

        yield self.inBrowser(unsubscribe)
        yield self.waitForPage(lambda: text("subscriptions") == "none", "the unsubscription")
