"""One state in force, whatever order the stages ran in, and every reader reports it alike.

The same photos go through crop, dedup and filter in each order a user can choose (dedup before or after crop,
filter before or after dedup), then a person's review before or after a re-filter. Every reader — ``status``,
``run``'s summary, the review gallery, ``review --list`` and the exported manifest — must give the same counts,
and every order must end in the same place. Driven through the Python API (:class:`facecurate.Project`).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageOps

import facecurate
from facecurate.pipeline import workspace_counts
from facecurate.review.report import reason_report

PHOTOS = ("obama.jpg", "biden.jpg", "astronaut.jpg", "obama_partial_face.jpg", "rocket_no_face.jpg", "obama2.jpg")
ORDERS = {"dedup, crop, filter": ("dedup", "crop", "filter"), "crop, dedup, filter": ("crop", "dedup", "filter"),
          "crop, filter, dedup": ("crop", "filter", "dedup")}


def _photos(tmp: Path, demo_dir: Path) -> Path:
    folder = tmp / "photos"
    folder.mkdir()
    for name in PHOTOS:
        (folder / name).write_bytes((demo_dir / name).read_bytes())
    with Image.open(demo_dir / "obama.jpg") as im:  # a mirrored, recompressed re-post: a duplicate photo
        ImageOps.mirror(im).save(folder / "obama_mirrored.jpg", quality=70)
    (folder / "page.jpg").write_bytes(b"<!DOCTYPE html><html>blocked</html>")  # a source that never arrives
    return folder


def _sample_ids(project: facecurate.Project) -> dict[str, str]:
    """Photo file name → sample_id of its (first) face."""
    return {Path(r["source_path"]).name: r["sample_id"] for r in project.manifest()
            if r["face_index"] is not None and r["source_path"]}


def _readers(project: facecurate.Project) -> dict[str, Counter[str]]:
    """Items by state, as each reader reports them (faces and photos without a face; failed sources aside)."""
    status = project.status()
    manifest = project.manifest()
    run: Counter[str] = Counter()
    names = {"kept": "keep", "rejected": "reject", "duplicates": "duplicate", "no_face": "no_face",
             "failed_count": "failed", "pending": "pending"}
    for counts in workspace_counts(project.workspace, project.catalog).values():
        for field, state in names.items():
            run[state] += getattr(counts, field)
    failed_sources = sum(1 for r in manifest if r["sample_id"].startswith("failed_"))
    run["failed"] -= failed_sources
    listed: dict[str, set[str]] = {}
    for group in reason_report(project.catalog, examples=0).groups:  # rule states: before any person decided
        listed.setdefault(group.status.value, set()).update(e.key for e in group.entries)
    return {
        "status": +Counter(status.face_states) + Counter(status.photo_states),
        "run summary": +run,
        "gallery": +Counter(project.catalog.gallery_facets().states),
        "manifest": Counter(r["status"] for r in manifest if not r["sample_id"].startswith("failed_")),
        "review --list (rule states)": Counter({state: len(keys) for state, keys in listed.items()}),
        "item_state (rule states)": +Counter(s.rule_state.value for s in project.catalog.item_states().values()
                                              if s.rule_state.value in ("reject", "duplicate", "no_face", "failed")),
    }


def _review(project: facecurate.Project) -> None:
    ids = _sample_ids(project)
    assert project.review([ids["biden.jpg"]], "rejected") == []       # the rules kept it; a person does not
    assert project.review([ids["obama_mirrored.jpg"], ids["astronaut.jpg"]], "kept") == []  # a copy kept anyway


def _refilter(project: facecurate.Project) -> None:
    project.filter(redo=True)


def _build(tmp: Path, demo_dir: Path, order: tuple[str, ...], last: tuple[Callable[[facecurate.Project], None],
                                                                            ...]) -> dict[str, Counter[str]]:
    project = facecurate.init(tmp / "ws")
    with project:
        project.import_paths([_photos(tmp, demo_dir)], label="web")
        (project.root / project.catalog.image_row(  # a raw file lost before crop: its crop fails
            next(s.image_id for s in project.catalog.first_sources().values()
                 if s.location.endswith("obama2.jpg"))).path).unlink()  # type: ignore[union-attr]
        stages = {"crop": lambda: project.crop(size=128, device="cpu"), "dedup": project.dedup,
                  "filter": project.filter}
        for name in order:
            stages[name]()
        for step in last:
            step(project)
        readers = _readers(project)
        assert Counter(r["status"] for r in project.manifest())["failed"] == 2  # the lost raw file, the page
        return readers


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, Counter[str]]]:
    from facecurate.demo import DEMO_DATA

    out = {}
    for (name, order), (when, last) in itertools.product(
            ORDERS.items(), {"review, then re-filter": (_review, _refilter),
                             "re-filter, then review": (_refilter, _review)}.items()):
        out[(name, when)] = _build(tmp_path_factory.mktemp("order"), DEMO_DATA, order, last)
    return out


def test_every_reader_reports_the_same_counts_in_every_stage_order(matrix):
    for (order, when), readers in matrix.items():
        in_force = {k: v for k, v in readers.items() if "rule states" not in k}
        assert len({tuple(sorted(c.items())) for c in in_force.values()}) == 1, (order, when, readers)
        assert readers["review --list (rule states)"] == readers["item_state (rule states)"], (order, when, readers)


def test_every_stage_order_ends_in_the_same_state(matrix):
    finals = {key: readers["manifest"] for key, readers in matrix.items()}
    assert len({tuple(sorted(c.items())) for c in finals.values()}) == 1, finals
    final = next(iter(finals.values()))
    # obama and the kept copy and astronaut kept, biden rejected by a person, the edge face by the mirroring rule
    assert final == Counter(keep=3, reject=2, no_face=1, failed=1), final
