"""Tracked queries: labels, the editable queries/<label>.txt mirror, pending vs used per engine."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from facecurate.catalog import Catalog
from facecurate.cli import app
from facecurate.crawl.queries import add_terms, check_terms, list_queries, mirror_path, parse_terms, remove_terms
from facecurate.errors import ConfigError, FacecurateError
from facecurate.workspace import Workspace

runner = CliRunner()


def _mirror_terms(ws: Workspace, label: str) -> list[str]:
    return parse_terms(mirror_path(ws, label).read_text(encoding="utf-8"))


def test_add_is_idempotent_and_mirrored(ws: Workspace, catalog: Catalog):
    added, known = add_terms(ws, catalog, "makeup", ["bold makeup look", "  bold   makeup look ", "클렌징 후 얼굴"])
    assert added == ["bold makeup look", "클렌징 후 얼굴"] and known == []
    added, known = add_terms(ws, catalog, "makeup", ["클렌징 후 얼굴"])
    assert added == [] and known == ["클렌징 후 얼굴"]
    text = mirror_path(ws, "makeup").read_text(encoding="utf-8")
    assert text.startswith("#") and _mirror_terms(ws, "makeup") == ["bold makeup look", "클렌징 후 얼굴"]


def test_unicode_forms_are_one_term(ws: Workspace, catalog: Catalog):
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "클렌징")
    add_terms(ws, catalog, "k", ["클렌징", decomposed])
    assert [q.term for q in catalog.tracked_queries("k")] == ["클렌징"]


def test_hand_edits_to_the_mirror_are_picked_up(ws: Workspace, catalog: Catalog):
    add_terms(ws, catalog, "makeup", ["a", "b", "c"])
    path = mirror_path(ws, "makeup")
    path.write_text(path.read_text(encoding="utf-8").replace("b\n", "") + "d\n# a comment\n\n", encoding="utf-8")
    edited = path.read_bytes()
    statuses = list_queries(ws, catalog).queries
    assert [s.term for s in statuses] == ["a", "c", "d"]
    assert _mirror_terms(ws, "makeup") == ["a", "c", "d"]
    # listing is a read: the file keeps the person's text and the catalog still tracks a, b, c ...
    assert path.read_bytes() == edited
    assert [q.term for q in catalog.tracked_queries("makeup")] == ["a", "b", "c"]
    # ... until the next command that writes applies the edits
    add_terms(ws, catalog, "makeup", ["e"])
    assert [q.term for q in catalog.tracked_queries("makeup")] == ["a", "c", "d", "e"]
    assert path.read_text(encoding="utf-8").count("# a comment") == 0
    assert [s.term for s in list_queries(ws, catalog).queries] == ["a", "c", "d", "e"]


def test_a_new_keyword_file_in_queries_becomes_a_label(ws: Workspace, catalog: Catalog):
    (ws.queries_dir / "nomakeup.txt").write_text("# my list\nno makeup face\nbare skin\n", encoding="utf-8")
    statuses = list_queries(ws, catalog).queries
    assert {(s.label, s.term) for s in statuses} == {("nomakeup", "no makeup face"), ("nomakeup", "bare skin")}
    assert all(s.added_at is None and s.pending for s in statuses)  # shown, not tracked yet
    assert catalog.tracked_queries() == [] and catalog.query_labels() == []
    add_terms(ws, catalog, "other", ["x"])  # any writing command tracks them
    assert {q.term for q in catalog.tracked_queries("nomakeup")} == {"no makeup face", "bare skin"}


def test_a_removed_term_written_back_by_hand_is_listed_with_its_history(ws: Workspace, catalog: Catalog):
    add_terms(ws, catalog, "m", ["a", "b", "c"])
    (b,) = [q for q in catalog.tracked_queries("m") if q.term == "b"]
    with catalog.transaction():
        catalog.finish_run(catalog.start_run(b.id, "bing", 10).id, "done")
    remove_terms(ws, catalog, "m", ["b"])
    path = mirror_path(ws, "m")
    path.write_text(path.read_text(encoding="utf-8") + "b\nz\n", encoding="utf-8")
    preview = [(s.term, s.added_at, s.pending) for s in list_queries(ws, catalog, "m").queries]
    assert preview == [("a", catalog.tracked_queries("m")[0].added_at, True), ("b", b.added_at, False),
                       ("c", catalog.tracked_queries("m")[1].added_at, True), ("z", None, True)]
    add_terms(ws, catalog, "m", [])
    applied = [(s.term, s.added_at, s.pending) for s in list_queries(ws, catalog, "m").queries]
    assert [t for t, _, _ in applied] == ["a", "b", "c", "z"] and applied[:3] == preview[:3]


def test_check_terms_accepts_tracked_and_hand_added_terms_only(ws: Workspace, catalog: Catalog):
    add_terms(ws, catalog, "m", ["a", "b"])
    path = mirror_path(ws, "m")
    path.write_text(path.read_text(encoding="utf-8").replace("b\n", "") + "c\n", encoding="utf-8")
    edited = path.read_bytes()
    assert check_terms(ws, catalog, ["  a ", "c", "a"]) == ["a", "c"]
    with pytest.raises(ConfigError, match="'b'"):
        check_terms(ws, catalog, ["b"])  # deleted from the file: the crawl will drop it
    assert path.read_bytes() == edited and [q.term for q in catalog.tracked_queries("m")] == ["a", "b"]


def test_remove_keeps_history_and_can_come_back(ws: Workspace, catalog: Catalog):
    add_terms(ws, catalog, "m", ["x", "y"])
    removed, unknown = remove_terms(ws, catalog, "m", ["x", "zzz"])
    assert removed == ["x"] and unknown == ["zzz"]
    assert _mirror_terms(ws, "m") == ["y"]
    added, _ = add_terms(ws, catalog, "m", ["x"])
    assert added == ["x"]


def test_pending_until_a_run_finishes_per_engine(ws: Workspace, catalog: Catalog):
    ws.config_path.write_text('[crawl]\nengines = "bing,wikimedia"\n', encoding="utf-8")
    add_terms(ws, catalog, "m", ["t"])
    (q,) = catalog.tracked_queries("m")
    with catalog.transaction():
        run = catalog.start_run(q.id, "bing", 10)
    listing = list_queries(ws, catalog)
    engines, (status,) = listing.engines, listing.queries
    assert engines == ["bing", "wikimedia"]
    assert [p.state for p in status.pairs] == ["running", "pending"]
    with catalog.transaction():
        catalog.finish_run(run.id, "done")
        catalog.finish_run(catalog.start_run(q.id, "wikimedia", 10).id, "done")
    (status,) = list_queries(ws, catalog).queries
    assert [p.state for p in status.pairs] == ["used", "used"] and not status.pending
    assert status.pairs[0].date and status.pairs[0].counts.found == 0
    with catalog.transaction():
        from facecurate.crawl.queries import write_mirror

        write_mirror(ws, catalog, "m", ["bing", "wikimedia"])
    assert _mirror_terms(ws, "m") == []  # used terms leave the editable list


def test_bad_label_is_a_message(ws: Workspace, catalog: Catalog):
    with pytest.raises(FacecurateError, match="cannot name a file"):
        add_terms(ws, catalog, "../evil", ["x"])


def test_cli_queries_add_list_remove(ws: Workspace, tmp_path):
    kw = tmp_path / "makeup.txt"
    kw.write_text("# keyword list\nno makeup face\nbold makeup look\n", encoding="utf-8")
    w = ["-w", str(ws.root)]
    result = runner.invoke(app, ["queries", "add", "--label", "makeup", "--file", str(kw), "클렌징 후 얼굴", *w])
    assert result.exit_code == 0, result.output
    assert "3 added" in result.output
    result = runner.invoke(app, ["queries", "list", "--json", *w])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {q["term"] for q in data["queries"]} == {"no makeup face", "bold makeup look", "클렌징 후 얼굴"}
    assert data["engines"] == ["bing"]
    assert all([p["engine"] for p in q["pairs"]] == ["bing"] and q["pairs"][0]["state"] == "pending"
               for q in data["queries"])
    table = runner.invoke(app, ["queries", "list", *w])
    assert "pending" in table.output and "no makeup face" in table.output
    result = runner.invoke(app, ["queries", "remove", "--label", "makeup", "bold makeup look", *w])
    assert result.exit_code == 0 and "1 removed" in result.output
    assert runner.invoke(app, ["queries", "add", *w]).exit_code != 0  # nothing to add: a usage error


def test_pending_downloads_after_a_rank_are_the_new_pages_hits(ws: Workspace, catalog: Catalog):
    """The crawl asks, after each page, only for the hits that page added (ranks grow page by page); a resume
    (after_rank 0) gets every hit still to fetch, fetched ones left out."""
    add_terms(ws, catalog, "faces", ["portrait"])
    (query,) = catalog.tracked_queries("faces")
    with catalog.transaction():
        run = catalog.start_run(query.id, "bing", 10)
        for rank in range(1, 7):
            url = f"http://example.org/{rank}.jpg"
            catalog.add_hit(run.id, url, url, rank, None, None, None, None, frozenset())
        (first,) = [r for r in catalog.pending_downloads(run.id) if r.rank == 1]
        catalog.settle_url(first.url_id, state="failed", image_id=None, is_new=False, error="http_404",
                           http_status=404)
    assert [r.rank for r in catalog.pending_downloads(run.id, after_rank=3)] == [4, 5, 6]
    assert [r.rank for r in catalog.pending_downloads(run.id)] == [2, 3, 4, 5, 6]
