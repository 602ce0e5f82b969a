"""A one-line progress bar with rate and ETA, shown only on a terminal."""
from __future__ import annotations

import sys
import time


class Progress:
    """``update()`` once per step; redraws at most every ``interval`` seconds.

    Quiet (draws nothing) unless ``stream`` is a TTY, so logs and CI output stay clean.
    """

    def __init__(self, total: int, label: str = "", stream=None, interval: float = 0.25):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total, self.label, self.interval = total, label, interval
        self.done = 0
        self.start = self._last = time.perf_counter()

    def update(self, steps: int = 1, note: str = "") -> None:
        self.done += steps
        now = time.perf_counter()
        if not self.enabled or (now - self._last < self.interval and self.done < self.total):
            return
        self._last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{self.done}/{self.total} {rate:6.1f} it/s ETA {eta:5.1f}s {note}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
