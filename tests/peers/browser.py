"""Headless Chromium driven by Selenium: the recipient's browser in portal tests.

Uses Debian's `chromium` and `chromium-driver` (installed by .ci/run). The
browser gets a download folder, records JavaScript dialogs and console
errors, and can take screenshots at a given window width.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_PATHS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first(paths: tuple[str, ...], name: str) -> str | None:
    for p in paths:
        if os.path.exists(p):
            return p
    return shutil.which(name)


def browser_available() -> bool:
    """Whether Chromium and its driver are installed."""
    return _first(CHROMIUM_PATHS, "chromium") is not None and (
        _first(DRIVER_PATHS, "chromedriver") is not None
    )


class Browser:
    """One headless Chromium session."""

    def __init__(
        self,
        download_dir: Path,
        *,
        width: int = 1280,
        height: int = 900,
        host_rules: str | None = None,
    ) -> None:
        """Start Chromium; downloads go to download_dir without asking."""
        download_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir = download_dir
        options = webdriver.ChromeOptions()
        binary = _first(CHROMIUM_PATHS, "chromium")
        if binary:
            options.binary_location = binary
        for arg in (
            "--headless=new",
            "--no-sandbox",  # tests run as root in containers
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--password-store=basic",
            f"--window-size={width},{height}",
        ):
            options.add_argument(arg)
        if host_rules:
            options.add_argument(f"--host-resolver-rules={host_rules}")
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(download_dir),
                "download.prompt_for_download": False,
                "safebrowsing.enabled": False,
            },
        )
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver_path = _first(DRIVER_PATHS, "chromedriver")
        service = Service(executable_path=driver_path) if driver_path else Service()
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_page_load_timeout(60)
        self.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(download_dir)},
        )

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the browser."""
        try:
            self.driver.quit()
        except WebDriverException:
            pass

    # --- pages ---------------------------------------------------------------

    def get(self, url: str) -> None:
        """Open url."""
        self.driver.get(url)

    @property
    def url(self) -> str:
        """The address bar."""
        return str(self.driver.current_url)

    def find(self, css: str) -> WebElement:
        """The first element matching a CSS selector."""
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        """Every element matching a CSS selector."""
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self) -> str:
        """The visible text of the page."""
        return str(self.find("body").text)

    def fill(self, css: str, value: str) -> None:
        """Type value into an input."""
        el = self.find(css)
        el.clear()
        el.send_keys(value)

    def click(self, css: str) -> None:
        """Click an element."""
        self.find(css).click()

    def wait_until(
        self, condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
    ) -> Any:
        """Poll condition until it returns something true."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = condition()
                if value:
                    return value
            except WebDriverException as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {last}")

    def wait_for(self, css: str, timeout: float = 30.0) -> WebElement:
        """Wait for an element to be present and shown."""

        def found() -> WebElement | None:
            for el in self.find_all(css):
                if el.is_displayed():
                    return el
            return None

        el: WebElement = self.wait_until(found, timeout, css)
        return el

    def alert_text(self) -> str | None:
        """The text of an open JavaScript dialog (alert/confirm/prompt), if any."""
        try:
            return str(self.driver.switch_to.alert.text)
        except NoAlertPresentException:
            return None

    def console_errors(self) -> list[str]:
        """Console messages of level SEVERE since the last call."""
        try:
            entries = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        except WebDriverException:
            return []
        return [str(e.get("message")) for e in entries if e.get("level") == "SEVERE"]

    def downloaded(self, name: str, timeout: float = 30.0) -> bytes:
        """The bytes of a finished download called name."""
        path = self.download_dir / name

        def done() -> bool:
            partial = list(self.download_dir.glob("*.crdownload"))
            return path.exists() and not partial

        self.wait_until(done, timeout, f"download {name}")
        return path.read_bytes()

    def screenshot(self, path: Path, width: int, height: int = 800) -> None:
        """A PNG of the whole page as a device of that width shows it (phone below 600 px)."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        total = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        metrics["height"] = max(height, min(total, 4000))
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
