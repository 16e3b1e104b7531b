"""Pure parts of the crawl: each engine's parser over text shaped like the real answers, URL normalisation,
Retry-After, backoff and robots headers. No network."""

from __future__ import annotations

import json

import pytest

from facecurate.crawl.engines import bing, duckduckgo, google, google_browser, naver, wikimedia
from facecurate.crawl.engines.base import LayoutError, looks_blocked, strip_tags
from facecurate.crawl.engines.jsobject import parse_object, to_json
from facecurate.crawl.http import backoff_delay, parse_retry_after, robots_opt_out
from facecurate.crawl.urls import host_key, is_fetchable, normalise

# Shaped like the 2020 async answer: m is HTML-escaped JSON (with &amp; inside a URL), a CJK title,
# size and format in span.nowrap, data-nextUrl on the container. Our own values, not the fixture's.
BING_ASYNC = """<div class="dg_b" role="main" data-pagewidth="0">
 <div id="mmComponent_images_1" class="dgControl hover" data-nextUrl="/images/async?q=x&amp;first=3&amp;count=35">
  <ul data-row=0 class="dgControl_list "><li data-idx=1><div class="iuscp varh"><div class="imgpt">
   <a class="iusc" m="{&quot;cid&quot;:&quot;ab12&quot;,&quot;purl&quot;:&quot;https://q.example.cn/z/1.htm&quot;,
   &quot;murl&quot;:&quot;https://pic.example.cn/img/0?a=1&amp;b=2&quot;,&quot;turl&quot;:&quot;https://tse1.example/th?id=1&amp;pid=15.1&quot;,
   &quot;t&quot;:&quot;折线图 예시&quot;,&quot;desc&quot;:&quot;&quot;}" href="/images/search?view=detailV2">
   <div class="img_cont hoff"><img class="mimg" src="https://tse3.example/th/id/1"/></div></a>
   <div class="img_info hon"><span class="nowrap">3442 x 2972 &#183; png</span></div></div></div></li>
  <li data-idx=2><div class="iuscp varh"><div class="imgpt">
   <a class="iusc" m="{&quot;purl&quot;:&quot;https://b.example/p&quot;,
   &quot;murl&quot;:&quot;https://b.example/i.webp&quot;,&quot;t&quot;:&quot;&lt;b&gt;two&lt;/b&gt;&quot;}" href="#">
   </a><div class="img_info hon"><span class="nowrap">640 x 480 · webp</span></div></div></div></li>
  <li><a class="iusc" m="{not json">broken</a></li></ul></div></div>"""

BING_NOJS = """<div class="row"><div class="item"><a href="http://h.example/g.JPG" class="thumb">
<div class="cico"><img src="http://tse4.example/th?id=1"/></div></a><div class="meta">
<a href="http://h.example/page/" class="tit">h.example</a><div class="des">Getting rid of &#187; gophers</div>
<div class="fileInfo">583 x 412 jpeg 70 KB</div></div></div></div>"""


def test_bing_async_results_keep_every_format_and_unescape_m():
    results = bing.parse_results(BING_ASYNC)
    assert [r.url for r in results] == ["https://pic.example.cn/img/0?a=1&b=2", "https://b.example/i.webp"]
    first = results[0]
    assert first.page_url == "https://q.example.cn/z/1.htm" and first.title == "折线图 예시"
    assert (first.width, first.height) == (3442, 2972)
    assert results[1].title == "two" and (results[1].width, results[1].height) == (640, 480)
    assert bing.has_container(BING_ASYNC)


def test_bing_old_nojs_layout_is_read_too():
    (r,) = bing.parse_results(BING_NOJS)
    assert r.url == "http://h.example/g.JPG" and r.page_url == "http://h.example/page/"
    assert r.title == "Getting rid of » gophers" and (r.width, r.height) == (583, 412)


def test_bing_empty_answers():
    assert bing.parse_results("") == []
    assert not bing.has_container("<html><body>new layout</body></html>")


@pytest.mark.parametrize("page", ['vqd="4-1234567890"', "vqd='4-1234567890'", "x&vqd=4-1234567890&p=1"])
def test_duckduckgo_vqd_in_each_form(page: str):
    assert duckduckgo.parse_vqd(f"<script>{page}</script>") == "4-1234567890"
    assert duckduckgo.parse_vqd("<html>no token</html>") is None


def test_duckduckgo_ijs_results_and_next():
    text = json.dumps({"ads": None, "next": "i.js?q=car&p=strict&s=100&u=yahoo&l=us-en", "query": "car",
                       "vqd": {"car": "4-1"}, "response_type": "images", "results": [
                           {"source": "Yahoo", "width": 1920, "height": 1200, "thumbnail": "https://t.example/1",
                            "url": "http://p.example/cars.html", "title": "Z4 &amp; friends",
                            "image": "http://p.example/walls/z4.jpg", "image_token": "x"},
                           {"title": "no image field"}]})
    results, nxt = duckduckgo.parse_results(text)
    assert len(results) == 1 and results[0].url == "http://p.example/walls/z4.jpg"
    assert results[0].page_url == "http://p.example/cars.html" and results[0].title == "Z4 & friends"
    assert nxt and "s=100" in nxt
    assert duckduckgo.parse_results(json.dumps({"results": []})) == ([], None)
    with pytest.raises(LayoutError):
        duckduckgo.parse_results("<html>blocked</html>")


NAVER_PAGE = """<html><script>
var other = {a: 1};
var imageSearchTabData = {
  // minified state, not JSON
  content: { items: [
    { originalUrl: 'https://blog.example/a.jpg', thumb: "https://thumb.example/a?type=a340", link: 'https://blog.example/post/1',
      title: '<b>클렌징</b> 후 얼굴 \\'맨얼굴\\'', source: 'blog', orgWidth: 800, orgHeight: "600", isAdult: !1, },
    { thumb: 'https://thumb.example/only', link: 'https://x.example', title: 'thumb only', },
    { originalUrl: 'https://cafe.example/b\\x2ejpg', link: 'https://cafe.example/2', title: 'b', orgWidth: 1.5e3, },
  ], total: 3, },
  query: 'x', hasMore: true, extra: undefined, /* trailing */
};
</script></html>"""


def test_naver_reads_the_javascript_literal():
    results = naver.parse_results(NAVER_PAGE)
    assert [r.url for r in results] == ["https://blog.example/a.jpg", "https://thumb.example/only",
                                        "https://cafe.example/b.jpg"]
    assert results[0].title == "클렌징 후 얼굴 '맨얼굴'" and results[0].page_url == "https://blog.example/post/1"
    assert (results[0].width, results[0].height) == (800, 600) and results[2].width == 1500


def test_naver_missing_or_broken_object_is_a_layout_error():
    with pytest.raises(LayoutError):
        naver.parse_results("<html><body>새 레이아웃</body></html>")
    with pytest.raises(LayoutError):
        naver.parse_results("var imageSearchTabData = { content: { items: [ {a: 'unterminated")
    with pytest.raises(LayoutError):
        naver.parse_results("var imageSearchTabData = { content: {} };")


def test_js_literal_edge_cases():
    assert parse_object("x = {a: [1, -2.5, 'q\"t', {b: null},], 'c d': `e`, f: !0};", "x") == \
        {"a": [1, -2.5, 'q"t', {"b": None}], "c d": "e", "f": True}
    assert json.loads(to_json("{u: '\\u00e9\\n'}")) == {"u": "é\n"}


def _commons_page(pageid: int, index: int, title: str, mime: str = "image/jpeg") -> dict:
    return {"pageid": pageid, "ns": 6, "title": f"File:{title}.jpg", "index": index, "imageinfo": [{
        "url": f"https://upload.example/{title}.jpg", "descriptionurl": f"https://commons.example/wiki/File:{title}",
        "width": 1566, "height": 2226, "mime": mime, "size": 816217, "user": "Uploader",
        "extmetadata": {"Artist": {"value": '<a href="//c.example/User:A">Agency &amp; Co</a>', "source": "x"},
                        "LicenseShortName": {"value": "Public domain", "source": "x"},
                        "ObjectName": {"value": title, "source": "x"}}}]}


def test_wikimedia_orders_by_index_and_reads_licence_and_author():
    text = json.dumps({"batchcomplete": "", "continue": {"gsroffset": 50, "continue": "gsroffset||"},
                       "query": {"pages": {"9": _commons_page(9, 2, "second"), "3": _commons_page(3, 1, "first"),
                                           "7": _commons_page(7, 3, "clip", mime="video/webm")}}})
    results, nxt = wikimedia.parse_results(text)
    assert [r.title for r in results] == ["first", "second"] and nxt == 50
    r = results[0]
    assert r.license == "Public domain" and r.author == "Agency & Co"
    assert r.page_url == "https://commons.example/wiki/File:first" and (r.width, r.height) == (1566, 2226)


def test_wikimedia_end_and_errors():
    assert wikimedia.parse_results(json.dumps({"batchcomplete": ""})) == ([], None)
    with pytest.raises(LayoutError, match="API error badvalue"):
        wikimedia.parse_results(json.dumps({"error": {"code": "badvalue", "info": "Unrecognized value"}}))


def test_google_imgres_links_and_thumbnails():
    href = ("https://www.google.com/imgres?imgurl=https%3A%2F%2Fimg.example%2F2021%2Fa.jpg&imgrefurl=https%3A%2F%2F"
            "www.example%2Ftouxiang%2F1.html&tbnid=47dC&vet=12ah&docid=Jt&w=400&h=300&q=%E5%A4%B4&ved=2ah")
    r = google.parse_imgres(href)
    assert r is not None and r.url == "https://img.example/2021/a.jpg"
    assert r.page_url == "https://www.example/touxiang/1.html" and (r.width, r.height) == (400, 300)
    assert google.parse_imgres("https://www.google.com/search?q=x") is None
    assert google.is_thumbnail("https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9Gc")
    assert google.is_thumbnail("data:image/jpeg;base64,AAAA") and google.is_thumbnail("")
    assert not google.is_thumbnail("https://img.example/full.jpg")


def test_google_panel_gives_the_full_image_not_the_thumbnail():
    loading = ('<div jsname="figiqf"><a href="https://p.example/x">'
               '<img src="https://encrypted-tbn0.gstatic.com/images?q=tbn:1" alt="t"></a></div>')
    assert google_browser.parse_panel(loading) is None
    ready = ('<div jsname="figiqf"><a href="/url?x"><img src="data:image/gif;base64,R0"></a>'
             '<a href="https://p.example/article"><img src="https://img.example/full.jpg" alt="A &amp; B"></a></div>')
    r = google_browser.parse_panel(ready, "https://www.google.com/search?q=x")
    assert r is not None and r.url == "https://img.example/full.jpg"
    assert r.page_url == "https://p.example/article" and r.title == "A & B"


def test_block_pages_are_recognised_only_as_block_pages():
    assert looks_blocked("Our systems have detected unusual traffic from your computer network") == "captcha"
    assert looks_blocked('<form action="https://www.google.com/sorry/index">') == "captcha"
    assert looks_blocked('<a href="https://consent.google.com/ml?continue=x">Before you continue</a>') == "consent"
    assert looks_blocked("<html><body>No results for your search</body></html>") is None
    assert strip_tags("<b>a</b> &amp; <i>b</i>") == "a & b" and strip_tags("<br>") is None


def test_url_normalisation_makes_one_key_per_image():
    same = ["HTTP://Example.COM:80/a%7eb/%e6%8a%98.jpg?b=2&a=1&utm_source=x#frag",
            "http://example.com/a~b/%E6%8A%98.jpg?a=1&b=2", "http://example.com/a~b/折.jpg?a=1&b=2"]
    assert len({normalise(u) for u in same}) == 1
    assert normalise("//pic.example/0") == "https://pic.example/0"
    assert normalise("https://h.example/a%2Fb") != normalise("https://h.example/a/b")  # %2F keeps its meaning
    assert normalise("https://h.example:8443/x") == "https://h.example:8443/x"
    assert normalise("https://h.example") == "https://h.example/"
    assert not is_fetchable("data:image/png;base64,AAA") and not is_fetchable("javascript:void(0)")
    assert not is_fetchable("http://h.example:port/x.jpg") and not is_fetchable("http://[::1/x")
    assert host_key("http://127.0.0.1:8001/x") != host_key("http://127.0.0.1:8002/x")
    with pytest.raises(ValueError):
        normalise("ftp://h.example/x")


@pytest.mark.parametrize("url", [
    "https://upload.example.org/wikipedia/commons/a/ab/Photo_(2019)_~x.jpg", "http://127.0.0.1/img/7.jpg",
    "https://h.example", "https://h.example/a//b/", "http://h.example/a:b@c!$&'*+,;=.jpg", "https://x-y.example/-",
    "http://127.0.0.1:8080/img/1.jpg", "https://h.example:80/x", "http://h.example:443"])
def test_a_url_already_canonical_is_its_own_normal_form(url: str):
    """The shortcut for canonical URLs gives what the full parse gives (a fragment forces the full parse)."""
    assert normalise(url) == normalise(url + "#frag") == (url if url.count("/") > 2 else url + "/")
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    default_port = f"{scheme}://{host.upper()}:{443 if scheme == 'https' else 80}/{path}"
    for variant in (url.replace("http", "HTTP", 1), url + "?utm_source=x") + ((default_port,) if ":" not in host
                                                                               else ()):
        assert normalise(variant) == normalise(url)
    # a default or impossible port is not canonical: the parse drops the one and refuses the other
    assert normalise("http://h.example:80/x") == "http://h.example/x" == normalise("http://h.example/x")
    assert normalise("https://h.example:443") == "https://h.example/"
    with pytest.raises(ValueError):
        normalise("http://h.example:70000/x")


def test_retry_after_backoff_and_robots():
    assert parse_retry_after("3", now=0) == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon", now=0) is None and parse_retry_after(None, now=0) is None
    delays = [backoff_delay(a, 0.5, 30.0, 0.999) for a in range(8)]
    assert delays == sorted(delays) and delays[-1] <= 30.0
    assert backoff_delay(2, 0.5, 30.0, 0.0) == pytest.approx(1.0)  # jitter keeps half the step at least
    assert robots_opt_out("noai") == "noai"
    assert robots_opt_out("googlebot: noindex, noimageai") == "noimageai"
    assert robots_opt_out("noindex, nofollow") is None and robots_opt_out(None) is None


def test_bing_size_comes_from_the_results_own_card():
    """The size is read from the nearest .iuscp card, else the nearest li; never from a neighbour's card."""
    m = '{&quot;murl&quot;:&quot;https://x.example/%d.jpg&quot;}'
    page = (f'<ul><li><a class="iusc" m="{m % 1}" href="#"></a><span class="nowrap">100 x 80 · jpeg</span></li>'
            f'<li><div class="iuscp"><a class="iusc other" m="{m % 2}"></a><span class="nowrap">7 x 9</span></div>'
            f'<span class="nowrap">1 x 1</span></li>'
            f'<li><a class="iusc" m="{m % 3}"></a></li><li><span class="nowrap">5 x 5</span></li>'
            f'<a class="iusc">no m</a></ul>')
    results = bing.parse_results(page)
    assert [r.url for r in results] == [f"https://x.example/{i}.jpg" for i in (1, 2, 3)]
    assert [(r.width, r.height) for r in results] == [(100, 80), (7, 9), (None, None)]


def _bing_as_the_tree_reads_it(text: str) -> list[tuple[object, ...]]:
    """The a.iusc reading as BeautifulSoup's tree gives it (the reading bing.parse_results kept before it
    read the page in one pass): the reference the one-pass reader must agree with."""
    from bs4 import BeautifulSoup

    out = []
    for a in BeautifulSoup(text, "html.parser").find_all("a", class_="iusc", m=True):
        try:
            meta = json.loads(str(a["m"]))
        except json.JSONDecodeError:
            continue
        if not isinstance(meta, dict) or not isinstance(meta.get("murl"), str) or not meta["murl"]:
            continue
        li = box = None
        for parent in a.parents:
            if "iuscp" in (parent.get("class") or ()):
                box = parent
                break
            if li is None and parent.name == "li":
                li = parent
        box = box or li
        info = box.find("span", class_="nowrap") if box else None
        m = bing._SIZE.search(info.get_text(" ")) if info is not None else None
        out.append((meta["murl"], meta.get("purl") or None, strip_tags(meta.get("t")),
                    (int(m.group(1)), int(m.group(2))) if m else None))
    return out


def _bing_variants(seed: int, n: int) -> list[str]:
    """Result cards nested, left open, closed twice, with void and self-closed elements, sizes split over
    inline elements or hidden in script and style, in a seeded random mix."""
    import random

    rng = random.Random(seed)
    pieces = ['<li>', '</li>', '<div class="iuscp varh">', '<div class="imgpt">', '</div>', '<span class="nowrap">',
              '</span>', '<span class="nowrap x">12 x 34</span>', '<span>5</span>', '<b>7 x</b> 8', ' 640 × 480 ',
              '<script>9 x 9</script>', '<style>3 x 3</style>', '<template>4 x 4</template>', '<img src="t.jpg">',
              '<br/>', '<div/>', '</img>', '<li class="iuscp">', '</ul>', '<ul>', '<a href="#">', '</a>',
              '<rt>6 x 6</rt>', '<!-- 1 x 1 -->', '&#215;', '</p>', '<p>']
    pages = []
    for _ in range(n):
        parts = []
        for i in range(rng.randint(5, 40)):
            if rng.random() < 0.25:
                meta = json.dumps({"murl": f"https://x.example/{i}.jpg", "purl": f"https://p.example/{i}",
                                   "t": f"<b>t{i}</b>"}).replace('"', "&quot;")
                parts.append(f'<a class="{rng.choice(["iusc", "iusc x", "y iusc"])}" m="{meta}">')
            else:
                parts.append(rng.choice(pieces))
        pages.append("".join(parts))
    return pages


def test_bing_one_pass_reading_agrees_with_the_tree():
    """The crawl reads Bing pages without building a tree (its CPU is the downloads' too); it must find the
    same results, cards and sizes as BeautifulSoup's tree on the real-shaped pages and 2,000 seeded messes."""
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures" / "engines"
    pages = [BING_ASYNC, (fixtures / "bing_async_2026.html").read_text(encoding="utf-8"),
             (fixtures / "bing_empty_2026.html").read_text(encoding="utf-8"), *_bing_variants(13, 2000)]
    assert any(len(_bing_as_the_tree_reads_it(p)) > 1 for p in pages)
    assert sum(any(r[3] for r in _bing_as_the_tree_reads_it(p)) for p in pages) > 100  # sizes were read too
    for page in pages:
        expected = _bing_as_the_tree_reads_it(page)
        if not expected:
            continue  # the old no-JS layout is read by the same tree code as before
        got = [(r.url, r.page_url, r.title, (r.width, r.height) if r.width is not None else None)
               for r in bing.parse_results(page)]
        assert got == expected, page


def test_bing_one_pass_reader_nests_as_beautifulsoup_does():
    """The void elements and the text-less elements the one-pass reader writes out are bs4's own."""
    from bs4.builder import HTMLTreeBuilder

    assert set(HTMLTreeBuilder.DEFAULT_EMPTY_ELEMENT_TAGS or ()) == bing._VOID
    assert set(HTMLTreeBuilder.DEFAULT_STRING_CONTAINERS) == bing._HIDDEN
