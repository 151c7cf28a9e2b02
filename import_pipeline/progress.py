"""Progress of long statements: rows done and time left, and how long each phase of the load took."""

import time


class Progress:
    """Logs rows done, rows/s and the time left, at most every `every` seconds."""

    def __init__(self, log, what: str, total: int, every: float = 5.0):
        self.log, self.what, self.total, self.every = log, what, total, every
        self.started = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.log is None or now - self.last < self.every or done >= self.total:
            return
        self.last = now
        rate = done / (now - self.started)
        self.log.info(
            f"{self.what}: {done:,} of {self.total:,} rows, {rate:,.0f} rows/s, about {(self.total - done) / rate:,.0f} s left"
        )


class Laps:
    """How long each phase of the load took, logged as it ends: long set-based statements report no rows."""

    def __init__(self, log=None):
        self.log = log
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.beside(phase, now - self._last)
        self._last = now

    def beside(self, phase: str, seconds: float) -> None:
        """A phase that ran on another connection beside the others: recorded, not part of their sum."""
        self.seconds[phase] = round(seconds, 2)
        if self.log is not None:
            self.log.info(f"load: {phase} took {self.seconds[phase]:,.1f} s")
