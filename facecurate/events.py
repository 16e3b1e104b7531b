"""How stages report progress: plain calls on a sink the caller supplies, never Rich, never printing.

A stage says what it starts (a name, how many items, in what unit), advances, and finishes; the output layer
(:mod:`facecurate.output`) turns that into bars, and scripts or notebooks pass nothing (:data:`SILENT`) or their
own sink. One protocol for every stage, so ``run`` and the single commands draw the same bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Failure:
    """One item a stage could not process: the file, crop or URL, and the message naming the fix.

    Every summary lists its failures as these, so ``failed`` has one shape in every command's ``--json``."""

    item: str
    error: str


class Progress(Protocol):
    def start(self, name: str, total: int | None, unit: str, done: int = 0) -> None:
        """A new task: ``total`` items (None while unknown), ``done`` of them already finished (a resume)."""

    def advance(self, n: int = 1) -> None:
        """``n`` more items of the current task are finished."""

    def finish(self, total: int | None = None) -> None:
        """The current task is over; ``total`` corrects the count when it ended short of the estimate."""

    def note(self, message: str) -> None:
        """Something a person should read while work goes on (plain text, never markup)."""


class Silent:
    """The sink for callers that want no progress (tests, scripts, notebooks)."""

    def start(self, name: str, total: int | None, unit: str, done: int = 0) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def finish(self, total: int | None = None) -> None:
        pass

    def note(self, message: str) -> None:
        pass


SILENT: Progress = Silent()
