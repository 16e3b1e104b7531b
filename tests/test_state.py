"""The state in force is defined once: the Python rule and the catalog's item_state view agree on any catalog,
and catalogs of every older schema migrate to the same schema as a fresh one."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from facecurate.catalog import MIGRATIONS, Catalog, Decision, State, state_of
from facecurate.catalog.migrations import statements


def _random_catalog(cat: Catalog, rng: random.Random) -> None:
    """Images and faces in every combination of the facts the state depends on, and a review log with
    decisions, changed minds and undos."""
    conn = cat.conn
    with cat.transaction():
        for i in range(1, 121):
            crop_state = rng.choice([None, "done", "done", "done", "no_face", "failed"])
            dup_of = rng.choice([None, None, None, max(1, i - 1)]) if i > 1 else None
            conn.execute("INSERT INTO images (id, sha256, path, format, width, height, bytes, label, added_at, "
                         "crop_state, dup_group, dup_of) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                         (i, f"{i:064x}", f"raw/{i}.jpg", "jpeg", 100, 100, 1000, rng.choice(["a", "b", None]),
                          "2026-01-01", crop_state, dup_of, dup_of))
            if crop_state != "done":
                continue
            for k in range(rng.choice([1, 1, 2, 3])):
                conn.execute(
                    "INSERT INTO faces (image_id, face_index, det_score, bbox, landmarks, quad, oob_fraction, "
                    "above_fraction, side_fraction, eye_angle, crop_path, crop_size, reasons, filtered_at, "
                    "dup_kind, dup_group) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (i, k, 0.99, "[0,0,1,1]", "[]", "[]", 0.0, 0.0, 0.0, 0.0, f"crops/{i}_{k}.jpg", 64,
                     json.dumps(rng.choice([[], [], ["wink"], ["closed_eyes", "blurry"]])),
                     rng.choice([None, "2026-01-02", "2026-01-02"]),
                     rng.choice([None, None, None, "perceptual", "pixels", "image"]), i))
        faces = conn.execute("SELECT image_id, face_index FROM faces").fetchall()
        for batch in range(1, 200):
            image_id, face_index = rng.choice(faces)
            after = rng.choice(["kept", "rejected", "none"])
            conn.execute("INSERT INTO review_log (image_id, face_index, batch, action, decision_before, "
                         "decision_after, rule_status, reviewer, session, decided_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (image_id, face_index, batch, {"kept": "keep", "rejected": "reject"}.get(after, "undo"),
                          "none", after, "keep", "t", "s", "2026-01-03"))


def _python_states(conn: sqlite3.Connection) -> dict[tuple[int, int], tuple[str, str]]:
    """(rule_state, state) per item, computed from raw rows with the Python definition."""
    latest: dict[tuple[int, int], str] = {}
    for r in conn.execute("SELECT image_id, face_index, decision_after FROM review_log ORDER BY id"):
        latest[(r[0], r[1])] = r[2]
    images = {r[0]: r for r in conn.execute("SELECT id, crop_state, dup_of FROM images")}
    out: dict[tuple[int, int], tuple[str, str]] = {}
    with_faces = set()
    for f in conn.execute("SELECT image_id, face_index, dup_kind, filtered_at, reasons FROM faces"):
        img = images[f[0]]
        with_faces.add(f[0])
        facts = {"crop_state": img[1], "photo_duplicate": img[2] is not None,
                 "face_duplicate": f[2] is not None and f[2] != "image", "filtered": f[3] is not None,
                 "rejected_by_rules": bool(json.loads(f[4]))}
        decision = latest.get((f[0], f[1]), "none")
        out[(f[0], f[1])] = (state_of(**facts).value, state_of(**facts, decision=decision).value)
    for image_id, img in images.items():
        if image_id not in with_faces:
            facts = {"crop_state": img[1], "photo_duplicate": img[2] is not None}
            out[(image_id, -1)] = (state_of(**facts).value, state_of(**facts).value)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_item_state_view_equals_the_python_definition(tmp_path: Path, seed: int):
    cat = Catalog.create(tmp_path / "c.db")
    _random_catalog(cat, random.Random(seed))
    view = {(r[0], r[1]): (r[2], r[3]) for r in cat.conn.execute(
        "SELECT image_id, face_index, rule_state, state FROM item_state")}
    expected = _python_states(cat.conn)
    assert view == expected
    states = {s for pair in view.values() for s in pair}
    assert states == {s.value for s in State}  # every state occurs, so every branch was compared
    assert {(k, v.state.value) for k, v in cat.item_states().items()} == {(k, v[1]) for k, v in view.items()}
    cat.close()


def test_state_precedence_and_decisions():
    assert state_of(fetched=False) is State.FAILED
    assert state_of(crop_state="failed", photo_duplicate=True) is State.FAILED
    assert state_of(crop_state="no_face", photo_duplicate=True) is State.NO_FACE
    assert state_of(crop_state="done", face_duplicate=True, filtered=True, rejected_by_rules=True) is State.DUPLICATE
    assert state_of(crop_state="done", filtered=False) is State.PENDING
    assert state_of(crop_state="done", filtered=True, rejected_by_rules=True) is State.REJECT
    assert state_of(crop_state="done", filtered=True) is State.KEEP
    assert state_of(crop_state="done", photo_duplicate=True, decision=Decision.KEPT) is State.KEEP
    assert state_of(crop_state="done", filtered=True, decision="rejected") is State.REJECT
    assert state_of(crop_state="done", filtered=True, rejected_by_rules=True, decision="none") is State.REJECT


# -- migrations ------------------------------------------------------------------------------------------------


def _schema(conn: sqlite3.Connection) -> dict[str, object]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    return {
        "version": conn.execute("PRAGMA user_version").fetchone()[0],
        "columns": {t: [(r[1], r[2], r[3], r[4], r[5]) for r in conn.execute(f"PRAGMA table_info({t})")]
                    for t in tables},
        "indexes": sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index' "
                                                     "AND name NOT LIKE 'sqlite_%'")),
        "triggers": sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")),
    }


def _old_catalog(path: Path, version: int) -> sqlite3.Connection:
    """A catalog as the release with schema ``version`` left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:version]:
        for statement in statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


@pytest.mark.parametrize("version", [1, 6, 7])
def test_old_catalogs_migrate_to_the_fresh_schema_and_keep_their_data(tmp_path: Path, version: int):
    old = _old_catalog(tmp_path / "old.db", version)
    old.execute("INSERT INTO images (id, sha256, path, format, width, height, bytes, label, added_at, crop_state) "
                "VALUES (1, 'ab', 'raw/ab.jpg', 'jpeg', 10, 10, 5, 'x', 'now', 'done')")
    status = ("status, ", "'reject', ") if version < 7 else ("", "")  # v7 dropped the stored status
    old.execute("INSERT INTO faces (image_id, face_index, det_score, bbox, landmarks, quad, oob_fraction, "
                f"above_fraction, side_fraction, eye_angle, crop_path, crop_size, {status[0]}reasons) "
                f"VALUES (1, 0, 0.9, '[]', '[]', '[]', 0, 0, 0, 0, 'crops/ab_0.jpg', 64, {status[1]}'[\"wink\"]')")
    if version >= 5:  # a decision logged before v8 has no reason: it reads as none given
        old.execute("INSERT INTO review_log (image_id, face_index, batch, action, decision_before, decision_after, "
                    "rule_status, reviewer, session, decided_at) VALUES (1, 0, 1, 'keep', 'none', 'kept', 'reject', "
                    "'ann', 's', 'now')")
    if version >= 4:  # filter ran: the stored status followed from the reasons
        old.execute("UPDATE faces SET filtered_at = 'now'")
    old.close()
    migrated = Catalog.open(tmp_path / "old.db")
    fresh = Catalog.create(tmp_path / "fresh.db")
    assert _schema(migrated.conn) == _schema(fresh.conn)
    assert migrated.schema_version == len(MIGRATIONS)
    face = next(migrated.faces())
    assert face.reasons == ["wink"] and face.crop_path == "crops/ab_0.jpg"
    expected = State.REJECT if version >= 4 else State.PENDING  # v1 had no filtered_at: the rules must run again
    if version >= 5:
        expected = State.KEEP
        assert [r.reason for r in migrated.review_history(1, 0)] == [None]
    assert migrated.item_states()[(1, 0)].state is expected
    migrated.close()
    fresh.close()


def test_migration_splitter_keeps_trigger_bodies_and_comment_semicolons():
    script = """
        -- a comment; with a semicolon
        CREATE TABLE t (a TEXT DEFAULT ';');   -- trailing; comment
        CREATE TRIGGER t_no_update BEFORE UPDATE ON t BEGIN SELECT RAISE(ABORT, 'no'); END;
    """
    got = statements(script)
    assert len(got) == 2 and got[1].endswith("END;") and "DEFAULT ';'" in got[0]
    conn = sqlite3.connect(":memory:")
    for s in got:
        conn.execute(s)
