"""Start-up stays cheap: the detector needs neither facenet-pytorch's package nor torchvision, and a crop with
nothing to do imports no torch at all, nor does a crop worker process (issue 16, must-haves 4 and 5). Checked
in fresh interpreters via sys.modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facecurate.device import cuda_possible
from facecurate.faces.mtcnn_nets import batched_nms


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_detector_imports_neither_torchvision_nor_facenet_pytorch() -> None:
    loaded = _modules_after("import facecurate.faces.detect")
    assert "torch" in loaded
    assert not {m for m in loaded if m.startswith(("torchvision", "facenet_pytorch"))}


def test_crop_with_nothing_to_do_imports_no_torch(tmp_path: Path) -> None:
    code = f"""
from pathlib import Path
from facecurate.catalog import Catalog
from facecurate.faces.crop import CropOptions, run_crop
from facecurate.workspace import init_workspace
ws = init_workspace(Path({str(tmp_path / 'ws')!r}))
summary = run_crop(ws, Catalog.open(ws.catalog_path), CropOptions.from_config(ws, device="cpu"))
assert summary.images == 0, summary
"""
    assert "torch" not in _modules_after(code)


@pytest.mark.skipif(cuda_possible(), reason="an NVIDIA driver is loaded: auto must ask torch about CUDA")
def test_auto_device_settles_on_the_cpu_without_torch(tmp_path: Path) -> None:
    """crop forks its workers before torch loads; on a machine where CUDA cannot exist, choosing the pipeline
    for ``--device auto`` must not import torch either."""
    code = f"""
from pathlib import Path
from facecurate.faces.crop import CropOptions, uses_torch_pipeline
from facecurate.workspace import init_workspace
ws = init_workspace(Path({str(tmp_path / 'ws')!r}))
assert not uses_torch_pipeline(CropOptions.from_config(ws, device="auto"))
"""
    assert "torch" not in _modules_after(code)


def test_crop_workers_never_load_torch() -> None:
    """A spawned crop worker (macOS, Windows) imports only this module and what it needs: a worker that loaded
    torch would cost seconds and hundreds of MB each."""
    loaded = _modules_after("import facecurate.faces.crop_workers")
    assert "facecurate.faces.crop_photo" in loaded and "torch" not in loaded


@pytest.mark.parametrize("n", [50, 1500])  # both of torchvision's paths: coordinate offsets, per-class loop
def test_batched_nms_equals_torchvision(n: int) -> None:
    from torchvision.ops import batched_nms as reference

    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 300, (n, 2))
    wh = rng.uniform(5, 80, (n, 2))
    boxes = torch.from_numpy(np.hstack([xy, xy + wh])).float()
    scores = torch.from_numpy(rng.choice(np.linspace(0.5, 1.0, 40), n)).float()  # ties, as MTCNN's 1.0s
    idxs = torch.from_numpy(rng.integers(0, 4, n))
    for threshold in (0.5, 0.7):
        assert torch.equal(batched_nms(boxes, scores, idxs, threshold), reference(boxes, scores, idxs, threshold))


def test_the_local_path_never_loads_pyarrow_for_typed_results() -> None:
    """Results become Arrow tables only when they leave the process (the ray executor): the stages the local
    path imports (dedup's FingerprintWork declares its schema lazily) load no pyarrow, and asking a work type
    for its schema does."""
    stages = ("import facecurate.pipeline, facecurate.dedup.stage, facecurate.faces.crop, facecurate.rules.stage, "
              "facecurate.crawl.stage, facecurate.executors")
    assert "pyarrow" not in _modules_after(stages)
    asked = _modules_after("from facecurate.dedup.stage import FingerprintWork, _Job\n"
                           "FingerprintWork(_Job('.', 'a', 'phash', 0.8, 1, 1)).results.schema")
    assert "pyarrow" in asked
