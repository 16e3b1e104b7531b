"""The gallery in real headless Chromium: load, filter, decide with the keyboard, reload, export, and crawled
strings staying text. Waits are conditions with generous limits, never timing assertions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facecurate.catalog import Catalog
from facecurate.export import export
from facecurate.review.report import write_html
from facecurate.review.server import access_for, create_app
from facecurate.workspace import Workspace
from tests.test_review_support import XSS, chromium, faces_by_name, require_chromium, reviewed_workspace, serving

WAIT = 30  # seconds a condition may take on a loaded 2-core machine before the test fails


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    require_chromium()
    with chromium() as d:
        yield d


@pytest.fixture
def gallery(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[tuple[Workspace, str]]:
    ws = reviewed_workspace(tmp_path_factory, tmp_path / "ws")
    with serving(create_app(ws)) as base:
        yield ws, base


def _wait(driver: Any, script: str, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(lambda d: d.execute_script(script), message=what)


def _open(driver: Any, url: str) -> None:
    driver.get("about:blank")  # a new document even when only the #filter part of the URL differs
    driver.get(url)
    _wait(driver, "return window.fc && window.fc.ready && !document.querySelector('.cell.loading')",
          "the gallery to draw")


def _cells(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script(
        "return [...document.querySelectorAll('.cell')].sort((a, b) => a.dataset.index - b.dataset.index)"
        ".map(c => ({key: c.dataset.key, cls: c.className, text: c.innerText}))")


def _press(driver: Any, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for k in keys:
        ActionChains(driver).send_keys(k).perform()


def _decisions(ws: Workspace) -> dict[str, str]:
    with Catalog.open(ws.catalog_path) as cat:
        latest = cat.review_latest()
        return {name: latest.get((f["image_id"], f["face_index"]), {"decision": "none"})["decision"]
                for name, f in faces_by_name(cat).items()}


def _no_alert(driver: Any) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    with pytest.raises(TimeoutException):
        WebDriverWait(driver, 1).until(expected_conditions.alert_is_present())


def test_gallery_filters_decides_with_keys_and_remembers(driver: Any, gallery: tuple[Workspace, str],
                                                         tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    ws, base = gallery
    _open(driver, f"{base}/")
    assert driver.find_element(By.ID, "count").text == "3 of 7"  # rejects first
    assert len(_cells(driver)) == 3

    Select(driver.find_element(By.ID, "f-reason")).select_by_value("mirroring")
    _wait(driver, "return document.getElementById('count').textContent === '2 of 7'", "the reason filter")
    assert len(_cells(driver)) == 2
    Select(driver.find_element(By.ID, "f-reason")).select_by_value("")
    _wait(driver, "return document.getElementById('count').textContent === '3 of 7'", "the filter reset")
    cells = _cells(driver)
    with Catalog.open(ws.catalog_path) as cat:
        by_key = {f"f{f['id']}": name for name, f in faces_by_name(cat).items()}
    names = [by_key[c["key"]] for c in cells]
    assert names[0] == "obama_partial_face.jpg" and "focus" in cells[0]["cls"]

    _press(driver, "k")  # keep the first: the cursor moves on at once, the item shows it once saved
    _wait(driver, "return document.querySelector('.cell[data-index=\"0\"]').classList.contains('dec-kept')", "k")
    assert "focus" in _cells(driver)[1]["cls"] and "kept" in _cells(driver)[0]["text"]
    assert _decisions(ws)[names[0]] == "kept"
    _press(driver, "r")
    _wait(driver, "return document.querySelector('.cell[data-index=\"1\"]').classList.contains('dec-rejected')", "r")
    assert _decisions(ws)[names[1]] == "rejected"
    _press(driver, "k")
    _wait(driver, "return document.querySelector('.cell[data-index=\"2\"]').classList.contains('dec-kept')", "k")
    _press(driver, "u")  # undo the last key press: the third goes back to the rules, the view goes to it
    _wait(driver, "return document.querySelector('.cell[data-index=\"2\"]').classList.contains('dec-none')", "u")
    assert "focus" in _cells(driver)[2]["cls"]
    assert _decisions(ws) == {**dict.fromkeys(by_key.values(), "none"), names[0]: "kept", names[1]: "rejected"}

    driver.refresh()  # a reload shows the decisions and keeps the filter from the URL; the status filter is on
    _open(driver, driver.current_url)  # the state in force, so the face a person kept has left the rejects
    cells = _cells(driver)
    assert [by_key[c["key"]] for c in cells] == names[1:]
    assert "dec-rejected" in cells[0]["cls"] and "dec-none" in cells[1]["cls"]
    _open(driver, f"{base}/#status=keep&decision=kept")
    cells = _cells(driver)
    assert [by_key[c["key"]] for c in cells] == names[:1] and "dec-kept" in cells[0]["cls"]

    with Catalog.open(ws.catalog_path) as cat:
        manifest = export(ws, cat, out_dir=tmp_path / "out").manifest
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    by_name = {Path(r["source_path"]).name: r for r in rows if r["source_path"]}
    assert by_name[names[0]]["status"] == "keep" and by_name[names[0]]["review"]["decision"] == "kept"
    assert by_name[names[1]]["review"]["decision"] == "rejected" and by_name[names[1]]["review"]["by"] == "tester"
    assert by_name[names[2]]["status"] == "reject" and by_name[names[2]]["review"]["decision"] == "none"


def test_selection_bulk_decisions_and_help(driver: Any, gallery: tuple[Workspace, str]):
    from selenium.webdriver.common.keys import Keys

    ws, base = gallery
    _open(driver, f"{base}/#status=any")
    assert len(_cells(driver)) == 7
    from selenium.webdriver.common.action_chains import ActionChains

    _press(driver, "x")  # x, then a shift range to the third
    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT).key_up(Keys.SHIFT).perform()
    _wait(driver, "return document.querySelectorAll('.cell.selected').length === 3", "range select")
    _press(driver, "r")
    _wait(driver, "return document.querySelectorAll('.cell.dec-rejected').length === 3", "bulk reject")
    assert driver.execute_script("return document.querySelectorAll('.cell.selected').length") == 0
    assert sorted(_decisions(ws).values()).count("rejected") == 3
    _press(driver, "a", "k")  # everything in the filter; the photo without a face is skipped
    _wait(driver, "return document.querySelectorAll('.cell.dec-kept').length === 6", "select all + keep")
    _press(driver, "u")
    _wait(driver, "return document.querySelectorAll('.cell.dec-rejected').length === 3", "bulk undo")
    _press(driver, "?")
    _wait(driver, "return !document.getElementById('help').hidden", "help overlay")
    _press(driver, Keys.ESCAPE)
    _wait(driver, "return document.getElementById('help').hidden", "help closes")


def test_crawled_strings_stay_text(driver: Any, gallery: tuple[Workspace, str], tmp_path: Path):
    from selenium.webdriver.common.by import By

    ws, base = gallery
    _open(driver, f"{base}/#status=reject&reason=no_headroom")
    cell = _cells(driver)[0]
    assert XSS in cell["text"]
    _press(driver, "\ue007")  # Enter: the detail view, with the title as its heading
    _wait(driver, "return document.getElementById('d-name').textContent.length > 0", "details")
    assert driver.find_element(By.ID, "d-name").text == XSS
    assert "<b>Jane</b>" in driver.find_element(By.ID, "d-sources").text
    _wait(driver, "return document.querySelectorAll('#d-svg circle').length === 5", "the 5 landmarks drawn")
    assert driver.execute_script("return document.querySelectorAll('#d-svg polygon, #d-svg rect.box').length") == 2
    injected = ("return document.querySelectorAll('img[src=\"x\"], [onerror]').length + "
                "[...document.querySelectorAll('b')].filter(b => b.textContent === 'Jane').length")
    assert driver.execute_script(injected) == 0
    _no_alert(driver)

    _open(driver, f"{base}/#status=reject&reason=mirroring&sort=reasons&dir=best")  # biden: javascript: page URL
    _press(driver, "\ue007")
    _wait(driver, "return document.getElementById('d-sources').textContent.includes('javascript:')", "sources")
    assert driver.execute_script("return document.querySelectorAll('#d-sources a[href^=\"javascript\"]').length") == 0

    report = tmp_path / "report.html"
    with Catalog.open(ws.catalog_path) as cat:
        write_html(ws, cat, report, limit=0)
    driver.get(report.as_uri())
    assert XSS in driver.find_element(By.TAG_NAME, "body").text
    assert driver.execute_script(injected) == 0
    _no_alert(driver)


def test_fast_key_presses_are_all_kept_in_order(driver: Any, gallery: tuple[Workspace, str]):
    ws, base = gallery
    _open(driver, f"{base}/#status=any&sort=order")
    _press(driver, "rkr")  # one burst: the view moves on at once, the writes follow in order
    _wait(driver, "return document.querySelectorAll('.cell.dec-rejected, .cell.dec-kept').length === 3", "3 saved")
    classes = [c["cls"] for c in _cells(driver)]
    assert "dec-rejected" in classes[0] and "dec-kept" in classes[1] and "dec-rejected" in classes[2]
    assert "focus" in classes[3]
    assert sorted(_decisions(ws).values()) == ["kept", "none", "none", "none", "rejected", "rejected"]


def test_remote_gallery_opens_from_the_printed_url_only(driver: Any, tmp_path_factory: pytest.TempPathFactory,
                                                        tmp_path: Path):
    """--allow-remote as a person meets it: the URL with the key opens the gallery (the key leaves the address
    bar, the HttpOnly cookie is out of the page's reach) and decisions save; without the key nothing is shown."""
    from selenium.webdriver.common.by import By

    ws = reviewed_workspace(tmp_path_factory, tmp_path / "ws")
    access = access_for("0.0.0.0", allow_remote=True)  # served on 127.0.0.1: an IP-literal Host, allowed
    assert access.secret
    with serving(create_app(ws, access=access)) as base:
        driver.delete_all_cookies()
        driver.get(f"{base}/")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "needs its key" in body and not driver.find_elements(By.CSS_SELECTOR, 'meta[name="fc-token"]')
        _open(driver, f"{base}/?key={access.secret}#status=any&sort=order")
        url = driver.current_url  # the fragment survives the redirect (the page writes the filter back in full)
        assert "key=" not in url and url.startswith(f"{base}/#status=any&") and "sort=order" in url
        assert access.secret not in driver.execute_script("return document.cookie + document.body.innerHTML")
        assert len(_cells(driver)) == 7
        _press(driver, "r")
        _wait(driver, "return document.querySelector('.cell[data-index=\"0\"]').classList.contains('dec-rejected')",
              "a decision over the key's cookie")
        assert sorted(_decisions(ws).values()).count("rejected") == 1
        driver.delete_all_cookies()  # another browser on the network: the page and its images stay closed
        driver.get("about:blank")  # a new document, not a same-page fragment change
        driver.get(f"{base}/#status=any")
        assert "needs its key" in driver.find_element(By.TAG_NAME, "body").text
        driver.get(f"{base}/?key=guess")
        assert "wrong key" in driver.find_element(By.TAG_NAME, "body").text
