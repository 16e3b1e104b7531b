"""Executors: where a stage's batches run (DESIGN.md §2, layer 4). ``local`` keeps each stage's own threads and
processes; ``ray`` sends batches to Ray actors on a cluster and streams the results back to this process, which
alone writes the catalog. Ray is an optional extra, imported only when the ray executor is chosen."""

from __future__ import annotations

from facecurate.errors import ConfigError
from facecurate.events import SILENT, Progress
from facecurate.executors.local import LocalExecutor
from facecurate.work import Executor
from facecurate.workspace import Workspace, check_choice

EXECUTORS = ("local", "ray")
RAY_MISSING = ("The ray executor needs Ray, an optional extra of facecurate: install it with `uv sync --extra ray` "
               "in a clone (or `pip install 'facecurate[ray]'`), or run with --executor local.")


def make_executor(ws: Workspace, name: str | None = None, progress: Progress = SILENT) -> Executor:
    """The executor ``name`` (None: ``[run] executor``), ready to run batches; ConfigError before any stage
    starts when Ray is asked for and not installed."""
    cfg = ws.config()
    chosen = str(cfg.get("run", "executor")) if name is None else check_choice("run", "executor", name, "--executor")
    if chosen == "local":
        return LocalExecutor()
    try:
        import ray  # noqa: F401  (only to say clearly that the extra is missing)
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    from facecurate.executors.ray import RayExecutor

    return RayExecutor(address=str(cfg.get("run", "ray_address")), workers=int(cfg.get("run", "ray_workers")),
                       gpus_per_worker=float(cfg.get("run", "ray_gpus_per_worker")), progress=progress,
                       parts=ws.tmp_dir)


__all__ = ["EXECUTORS", "RAY_MISSING", "Executor", "LocalExecutor", "make_executor"]
