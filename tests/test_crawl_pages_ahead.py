"""Result pages fetched ahead of recording: the next page goes out as soon as it is certain to be needed, and
a page the run might not read is never asked for (a loopback Bing counts the requests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from facecurate.crawl.engines import Engine
from facecurate.crawl.http import Http, HttpSettings
from facecurate.crawl.pages_ahead import PagesAhead
from facecurate.crawl.stage import make_engine
from facecurate.workspace import Workspace
from tests.fakeweb import FakeEngines, ImageHost, items_for, write_config

TERM = "many faces"  # 120 results: pages of 35, 35, 35, 15


@pytest.fixture
def bing(ws: Workspace) -> Iterator[tuple[Engine, FakeEngines]]:
    host = ImageHost()
    engines = FakeEngines({TERM: items_for(host, list(range(1, 121)))})
    with engines.server:
        write_config(ws.root, engines.server.base)
        http = Http(HttpSettings.from_config(ws))
        try:
            yield make_engine(ws, "bing", http), engines
        finally:
            http.close()


def _firsts(engines: FakeEngines) -> list[str]:
    return [r.query["first"] for r in engines.server.requests if r.path == "/images/async"]


def _until(condition: Callable[[], bool]) -> None:
    """Wait for something the searcher thread must do; a generous bound only so a broken build fails."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the searcher never got there"
        time.sleep(0.01)


def _settled(engines: FakeEngines, firsts: list[str]) -> None:
    """The requests are exactly ``firsts`` now and stay so (the searcher waits instead of asking for more)."""
    _until(lambda: len(_firsts(engines)) >= len(firsts))
    time.sleep(0.2)
    assert _firsts(engines) == firsts


def test_the_next_page_goes_out_before_the_one_in_hand_is_recorded(bing: tuple[Engine, FakeEngines]):
    engine, engines = bing
    with ThreadPoolExecutor(max_workers=1) as searcher:
        ahead = PagesAhead(searcher, lambda c: engine.search(TERM, c), {}, hits=0, empty=0, limit=120,
                           empty_pages=3, depth=2)
        first = ahead.take()
        assert first is not None and len(first.results) == 35
        _settled(engines, ["1", "36"])  # page 2 came while page 1 waits to be recorded; no third yet (depth 2)
        ahead.recorded(35, 0)
        _settled(engines, ["1", "36", "71"])  # page 3 out before page 2 is even taken
        second = ahead.take()
        assert second is not None and second.results[0].url.endswith("/36.jpg")
        ahead.recorded(70, 0)
        _settled(engines, ["1", "36", "71", "106"])
        for hits in (105, 120):
            page = ahead.take()
            assert page is not None
            ahead.recorded(hits, 0)
        ahead.close()
    # page 4 held the last 15 hits wanted: no fifth page was asked for
    assert _firsts(engines) == ["1", "36", "71", "106"]


def test_a_page_the_limit_may_not_need_is_never_asked_for(bing: tuple[Engine, FakeEngines]):
    engine, engines = bing
    with ThreadPoolExecutor(max_workers=1) as searcher:
        ahead = PagesAhead(searcher, lambda c: engine.search(TERM, c), {}, hits=0, empty=0, limit=50,
                           empty_pages=3, depth=3)
        assert ahead.take() is not None
        # 35 + 35 results unrecorded could already make the 50 hits: page 3 waits, though depth allows it
        _settled(engines, ["1", "36"])
        ahead.recorded(35, 0)
        _settled(engines, ["1", "36"])
        assert ahead.take() is not None
        ahead.recorded(50, 0)
        ahead.close()
    assert _firsts(engines) == ["1", "36"]


def test_pages_that_may_come_back_empty_count_against_empty_pages(bing: tuple[Engine, FakeEngines]):
    engine, engines = bing
    with ThreadPoolExecutor(max_workers=1) as searcher:
        # one empty page recorded already, two end the run: the page in hand might be the second, so nothing
        # more goes out until it is recorded, whatever the depth
        ahead = PagesAhead(searcher, lambda c: engine.search(TERM, c), {}, hits=0, empty=1, limit=120,
                           empty_pages=2, depth=3)
        assert ahead.take() is not None
        _settled(engines, ["1"])
        # it brought new hits: the empty run is over, so the next page is certain, and the one after it too
        # (two unrecorded pages could end the run only by both coming back empty)
        ahead.recorded(35, 0)
        _settled(engines, ["1", "36", "71"])
        ahead.close()
    assert _firsts(engines) == ["1", "36", "71"]
