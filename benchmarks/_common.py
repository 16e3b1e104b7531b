"""Helpers shared by the benchmark scripts: where the real photos are, and how to print a ratio table."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "eval" / "dev"
DEMO = ROOT / "facecurate" / "demo_data"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def images_in(*folders: Path) -> list[Path]:
    out: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            out += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return out


def print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r))
    Console().print(table)


def print_wide_table(title: str, columns: list[str], rows: list[list[object]], width: int = 160) -> None:
    """print_table for result tables with many columns: a fixed width so no column is cut to an ellipsis."""
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r))
    Console(width=width).print(table)
