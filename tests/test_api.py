"""The Python API: a notebook's session, start to finish, with the same records the CLI prints."""

from __future__ import annotations

from pathlib import Path

import pytest

import facecurate
from facecurate import output
from facecurate.errors import ConfigError, WorkspaceError
from facecurate.export import FIELDS
from facecurate.faces.crop import CropSummary


def test_a_notebook_session_from_folder_to_dataframe(tmp_path: Path, demo_dir: Path):
    with facecurate.init(tmp_path / "ws") as project:
        assert project.add_queries("portraits", ["official portrait", "official portrait"]) == (
            ["official portrait"], [])
        listing = project.queries()
        assert [(q.label, q.term, q.pending) for q in listing.queries] == [("portraits", "official portrait", True)]
        imported = project.import_paths([demo_dir], label="portraits")
        assert imported.new == 7 and imported.failed == []
        summary = project.run(stages=["dedup", "crop", "filter", "export"], device="cpu", layout="per-label")
        assert summary.ok and summary.error is None
        assert [s.state for s in summary.stages] == ["not selected", "done", "done", "done", "done"]
        crop = summary.stage("crop").result
        assert isinstance(crop, CropSummary) and crop.faces == 6
        total = summary.total
        assert total.kept + total.rejected + total.no_face + total.duplicates == 7 and total.pending == 0

        rows = project.manifest()
        assert len(rows) == 7 and {r["status"] for r in rows} <= {"keep", "reject", "no_face"}
        kept = [r["sample_id"] for r in rows if r["status"] == "keep"]
        assert len(kept) == total.kept == len(list((project.root / "exports" / "per-label").rglob("*.jpg")))
        # a person overrides the rules from the notebook as from the gallery; every reader sees it
        assert project.review([kept[0], "ffffffffffffffff_0"], "rejected") == ["ffffffffffffffff_0"]
        assert project.status().face_states.get("reject", 0) == total.rejected + 1

        table = project.manifest_table()
        assert table.num_rows == 7 and str(table.schema.field("face_index").type) == "int64"
        frame = project.manifest_frame()
        assert str(frame["face_index"].dtype) == "int64[pyarrow]"  # nullable integers stay integers
        assert frame["face_index"].isna().sum() == 1  # the photo without a face
        assert list(frame.columns) == list(FIELDS)
        # the records are what --json prints
        assert output.jsonable(summary)["total"]["kept"] == total.kept


def test_open_finds_the_workspace_and_bad_options_fail_before_any_work(tmp_path: Path):
    with pytest.raises(WorkspaceError, match="facecurate init"):
        facecurate.open(tmp_path / "nowhere")
    facecurate.init(tmp_path / "ws").close()
    with facecurate.open(tmp_path / "ws") as project:
        assert repr(project).startswith("facecurate.Project(") and project.settings()["crop"]["size"] == 512
        with pytest.raises(ConfigError, match="--device"):
            project.crop(device="tpu")
        with pytest.raises(ConfigError, match="cropp"):
            project.run(stages=["cropp"])
        assert project.status().images == 0
