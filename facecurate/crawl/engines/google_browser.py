"""``google-browser``: Google Images driven in headless Chromium through Selenium (the desktop page needs
JavaScript since January 2025). The default ``google`` engine is the plain-HTTP feature-phone path
(:mod:`facecurate.crawl.engines.google`); this one is kept for when that path is refused.

The browser loads ``/search?q=…&tbm=isch``, scrolls until the grid stops growing, clicks each thumbnail to
open the side panel and reads the full-size image (an ``img`` whose ``src`` is not a gstatic thumbnail). All
selectors live in SELECTORS because Google renames them every few months: browser scrapers report (Aug 2026)
that the ``div[jsname="dTDiAc"]`` grid no longer matches and read ``img[src^="https://encrypted-tbn"]``
thumbnails instead, so that comes first, the older ones after it (a regional layout may still serve them).
Consent walls and ``/sorry/`` CAPTCHA pages stop the search with the page saved.

The system's chromium and chromedriver are used (paths in ``[crawl]``): the driver path is given to the
Service explicitly, so Selenium Manager never tries to download one (it cannot, offline).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

from facecurate.crawl.engines.base import Engine, EngineContext, Page, Result, as_int, looks_blocked, strip_tags
from facecurate.crawl.engines.google import is_thumbnail, parse_imgres

T = TypeVar("T")

PAGE_SIZE = 20
# One table of selectors, newest first; each list is tried in order.
SELECTORS: dict[str, tuple[str, ...]] = {
    "grid_item": ('img[src^="https://encrypted-tbn"]', 'div[jsname="dTDiAc"]', "div.isv-r", "div[data-ri]"),
    "panel": ('div[jsname="figiqf"]', "div#islsp", "div.tvh9oe"),
    "more_button": ('input.mye4qd', 'input[type="button"][value*="more" i]'),
}
NO_RESULTS = ("did not match any image results", "did not match any documents")
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1800", "--mute-audio")


def parse_panel(html: str, base_url: str = "") -> Result | None:
    """The side panel's HTML → the full-size image, its page and title; None while only a thumbnail shows.
    Pure."""
    from bs4 import BeautifulSoup  # here: importing bs4 (and soupsieve) costs ~45 ms of every crawl's start

    soup = BeautifulSoup(html, "html.parser")
    for img in soup.find_all("img"):
        src = str(img.get("src") or "")
        if is_thumbnail(src) or not src.startswith(("http://", "https://")):
            continue
        link = img.find_parent("a", href=True)
        page = str(link["href"]) if link else None
        if page is None:
            other = next((a for a in soup.find_all("a", href=True)
                          if str(a["href"]).startswith("http") and "google." not in str(a["href"])), None)
            page = str(other["href"]) if other else None
        title = strip_tags(str(img.get("alt") or "")) or (strip_tags(link.get_text(" ")) if link else None)
        try:
            page_url = urljoin(base_url, page) if page else None
        except ValueError:  # a link that does not split (http://[::1…): no page for this result
            page_url = None
        return Result(url=src, page_url=page_url, title=title,
                      width=as_int(img.get("data-ow")), height=as_int(img.get("data-oh")))
    return None


class GoogleBrowser(Engine):
    name = "google-browser"

    def __init__(self, ctx: EngineContext) -> None:
        super().__init__(ctx)
        self._driver: Any = None
        self._profile: str | None = None
        self._term: str | None = None
        self.timeout = ctx.browser.browser_timeout
        self.scroll_wait = ctx.browser.scroll_wait

    def page_url(self, term: str) -> str:
        query = {"q": term, "tbm": "isch", "hl": "en"}
        if self.ctx.options.get("face_only"):
            query["tbs"] = "itp:face"
        return f"{self.base_url}/search?{urlencode(query)}"

    # -- browser ---------------------------------------------------------------------------------------

    def _start(self) -> Any:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service

        chromium, driver_path = self.ctx.browser.chromium, self.ctx.browser.chromedriver
        for path, what in ((chromium, "chromium"), (driver_path, "chromedriver")):
            if not Path(path).is_file():
                raise self.stopped("browser", f"{what} not found at {path} ([crawl] {what})", self.base_url, None)
        self._profile = tempfile.mkdtemp(prefix="facecurate-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for arg in (*CHROMIUM_ARGS, f"--user-data-dir={self._profile}",
                    f"--user-agent={self.ctx.search_user_agent}"):
            opts.add_argument(arg)
        try:
            driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
        except WebDriverException as exc:
            raise self.stopped("browser", f"Chromium did not start ({str(exc).splitlines()[0]})",
                               self.base_url, None) from None
        driver.set_page_load_timeout(max(self.timeout * 3, 10))
        return driver

    def close(self) -> None:
        if self._driver is not None:
            with contextlib.suppress(Exception):  # a dead browser must not hide the crawl's own outcome
                self._driver.quit()
            self._driver = None
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def _find(self, key: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        for css in SELECTORS[key]:
            found = self._driver.find_elements(By.CSS_SELECTOR, css)
            if found:
                return list(found)
        return []

    def _wait(self, condition: Callable[[], T], timeout: float) -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.05)

    def _open(self, term: str) -> None:
        """Load the result page for ``term`` (once per term) and make sure it is a grid, not a block."""
        if self._driver is not None and self._term == term:
            return
        if self._driver is None:
            self._driver = self._start()
        url = self.page_url(term)
        from selenium.common.exceptions import WebDriverException

        try:
            self._driver.get(url)
        except WebDriverException as exc:
            raise self.stopped("unreachable", f"the browser could not load the page ({str(exc).splitlines()[0]})",
                               url, None) from None
        self._term = term
        current = self._driver.current_url
        if "/sorry/" in current:
            raise self.stopped("captcha", "Google answered with its /sorry/ CAPTCHA page", current,
                               self._driver.page_source)
        if (urlsplit(current).hostname or "").startswith("consent."):
            raise self.stopped("consent", "Google answered with a consent page", current, self._driver.page_source)
        if not self._wait(lambda: self._find("grid_item"), self.timeout):
            text = self._driver.page_source
            if any(marker in text for marker in NO_RESULTS) and not looks_blocked(text):
                return
            raise self.stopped(looks_blocked(text) or "layout_changed",
                               "no result grid (" + " / ".join(SELECTORS["grid_item"]) + ") in the page", current, text)

    def _grow_to(self, wanted: int) -> list[Any]:
        """Scroll (and press 'show more') until ``wanted`` grid items exist or the page stops growing."""
        items = self._find("grid_item")
        while len(items) < wanted:
            before = len(items)
            self._driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")
            for button in self._find("more_button"):
                if button.is_displayed():
                    button.click()

            def grew(b: int = before) -> bool:
                return len(self._find("grid_item")) > b

            grown = self._wait(grew, self.scroll_wait)
            items = self._find("grid_item")
            if not grown:
                break
        return items

    def _full_image(self, item: Any) -> Result | None:
        """Click one thumbnail and read the full-size image from the side panel (or its /imgres link)."""
        from selenium.common.exceptions import (
            ElementClickInterceptedException,
            ElementNotInteractableException,
            WebDriverException,
        )
        from selenium.webdriver.common.by import By

        for a in item.find_elements(By.CSS_SELECTOR, 'a[href*="/imgres?"]'):
            found = parse_imgres(a.get_attribute("href") or "")
            if found:
                return found
        panel_css = ", ".join(f"{p} img" for p in SELECTORS["panel"])
        try:
            self._driver.execute_script(
                "document.querySelectorAll(arguments[0]).forEach(e => e.setAttribute('src', ''));", panel_css)
            self._driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", item)
            target = (item.find_elements(By.CSS_SELECTOR, "img") or [item])[0]
            try:
                target.click()
            except (ElementClickInterceptedException, ElementNotInteractableException):
                self._driver.execute_script("arguments[0].click();", target)  # covered by the panel or a bar
        except WebDriverException:
            return None

        def panel_result() -> Result | None:
            for panel in self._find("panel"):
                found = parse_panel(panel.get_attribute("outerHTML") or "", self._driver.current_url)
                if found:
                    return found
            return None

        return self._wait(panel_result, self.timeout)

    # -- the interface ---------------------------------------------------------------------------------

    def search(self, term: str, cursor: dict[str, Any]) -> Page:
        offset = int(cursor.get("offset", 0))
        self._open(term)
        items = self._grow_to(offset + PAGE_SIZE)
        if offset >= len(items):
            return Page([], {"offset": offset}, end=True)
        results: list[Result] = []
        stop = min(len(items), offset + PAGE_SIZE)
        for index in range(offset, stop):
            items = self._find("grid_item")
            if index >= len(items):
                break
            found = self._full_image(items[index])
            if found is not None:
                results.append(found)
        return Page(results, {"offset": stop})
