"""The crop stage run by an executor that is not local (``run --executor ray``).

:func:`run_crop_with` is the stage's loop around :class:`~facecurate.faces.crop_batch.CropWork` (the same
work crop's own worker processes run): it selects what is not cropped, hands the batches over, and records each
batch's outcomes in one transaction with the same :func:`~facecurate.faces.crop.record_batch` the local path
uses, so the state rules are one code.
"""

from __future__ import annotations

from facecurate.catalog import Catalog
from facecurate.errors import ConfigError
from facecurate.events import SILENT, Progress
from facecurate.faces import crop_workers
from facecurate.faces.crop import CropSummary, crop_batches, record_batch
from facecurate.faces.crop_batch import CropOptions, CropWork
from facecurate.filestore import forget_mirrored, storage_setting
from facecurate.work import Executor
from facecurate.workspace import Workspace


def run_crop_with(executor: Executor, ws: Workspace, catalog: Catalog, opts: CropOptions, *, redo: bool = False,
                  progress: Progress = SILENT) -> CropSummary:
    """:func:`~facecurate.faces.crop.run_crop` with the batches run by ``executor``: the same selection, the
    same batches ([crop] batch_size photos), the same records, each batch committed as its results arrive.

    GPU workers when the device allows one (auto or cuda) and the executor has GPUs to give, else CPU workers;
    ``cuda`` on a cluster without GPUs is refused before anything runs."""
    rows = catalog.images_to_crop(redo=redo)
    if not rows:  # nothing to do: no cluster started, no detector loaded
        progress.start(f"crop ({opts.device} on {executor.name})", 0, "img")
        progress.finish()
        return CropSummary(device=f"{opts.device} on {executor.name}")
    gpus = executor.gpus_per_worker if opts.device != "cpu" else 0.0
    if opts.device == "cuda" and gpus <= 0:
        raise ConfigError(f"--device cuda: the {executor.name} executor's cluster has no GPU; use --device auto "
                          f"or cpu, or add GPU nodes to the cluster.")
    device = "cuda" if gpus > 0 else "cpu"
    summary = CropSummary(device=f"{device} on {executor.name}")
    progress.start(f"crop ({summary.device})", len(rows), "img")
    cfg = ws.config()
    # MTCNN's float32 sums depend on torch's thread count (boxes move by ~1e-5 px, and the rules' scores on the
    # re-cut crops by ~1e-3): a CPU worker detects with the threads the local path would give its detector for
    # this run (crop_workers.plan), so both executors give the same answers on one machine.
    threads = 0 if gpus > 0 else crop_workers.plan(opts.workers, len(rows))[1]
    work = CropWork(str(ws.root), _with_device(opts, device), int(cfg.get("media", "max_pixels")),
                    int(cfg.get("media", "max_bytes")), float(cfg.get("media", "decode_budget")), gpus, threads,
                    storage_setting(ws))
    chunks = crop_batches(rows, opts.batch_size)
    for chunk, outcomes in zip(chunks, executor.map_batches(work, chunks), strict=True):
        found = {j: o.found for j, o in enumerate(outcomes) if o.found is not None}
        record_batch(catalog, chunk, [o.as_outcome() for o in outcomes], found, summary)
        forget_mirrored(ws, [f.crop_path for o in outcomes for f in o.faces or []])  # re-cut under --redo
        progress.advance(len(chunk))
    progress.finish()
    return summary


def _with_device(opts: CropOptions, device: str) -> CropOptions:
    from dataclasses import replace

    return replace(opts, device=device)  # type: ignore[arg-type]
