"""Progress and console messages of batch commands.

On a terminal: a ``rich`` progress bar (count, rate, elapsed, ETA). Otherwise
(logs, CI, pipes): a plain line at most every ``interval`` seconds. ``quiet``
shows errors only; ``verbose`` one line per image.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

__all__ = ["Reporter"]


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class _ConsoleHandler(logging.Handler):
    def __init__(self, reporter: "Reporter") -> None:
        super().__init__()
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            self.reporter.print(prefix + record.getMessage())
        except Exception:  # pragma: no cover
            self.handleError(record)


class Reporter:
    """Progress display plus a logging handler that prints above it."""

    def __init__(
        self,
        total: int,
        *,
        quiet: bool = False,
        verbose: bool = False,
        stream: TextIO | None = None,
        interval: float = 10.0,
        description: str = "measuring",
        unit: str = "img",
    ) -> None:
        self.total = total
        self.quiet = quiet
        self.verbose = verbose
        self.stream = stream or sys.stderr
        self.interval = interval
        self.description = description
        self.unit = unit
        self.done = 0
        self.failed = 0
        self._start = time.monotonic()
        self._last_line = self._start
        self._progress = None
        self._task = None
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if tty and not quiet and total > 0:
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )
            except ImportError:  # pragma: no cover - rich is a dependency
                pass
            else:
                self._progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"),
                    TextColumn("failed {task.fields[failed]}"),
                    TimeElapsedColumn(),
                    TextColumn("ETA"),
                    TimeRemainingColumn(),
                    console=Console(file=self.stream),
                    transient=False,
                )
        self.handler = _ConsoleHandler(self)
        self.handler.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.WARNING)

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> "Reporter":
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, rate="", failed=0)
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    # -- output ---------------------------------------------------------------------------------
    def print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        r = self.rate()
        return (self.total - self.done) / r if r > 0 else None

    def advance(self, ok: bool, *, skipped: bool = False) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1, rate=f"{self.rate():.2f} {self.unit}/s", failed=self.failed)
            return
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval or self.done == self.total:
            self._last_line = now
            pct = 100.0 * self.done / self.total if self.total else 100.0
            self.print(
                f"{self.description} {self.done}/{self.total} ({pct:.0f} %), {self.failed} failed, "
                f"{self.rate():.2f} {self.unit}/s, ETA {_fmt_eta(self.eta())}"
            )
