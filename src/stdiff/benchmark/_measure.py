"""Wall time, CPU time and peak resident memory of a block of code (sampled in a background thread)."""

from __future__ import annotations

import resource
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any


def rss_mb() -> float:
    """Current resident set size (MB), from ``/proc/self/statm`` (the peak so far where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of the process so far (MB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 1024.0**2


@contextmanager
def measure(interval: float = 0.05):
    """Yield a dict filled on exit with ``seconds``, ``cpu_seconds`` and ``peak_rss_mb`` of the block."""
    out: dict[str, Any] = {}
    peak = [rss_mb()]
    stop = threading.Event()

    def poll():
        while not stop.wait(interval):
            peak[0] = max(peak[0], rss_mb())

    th = threading.Thread(target=poll, daemon=True)
    t0, c0 = time.perf_counter(), time.process_time()
    th.start()
    try:
        yield out
    finally:
        stop.set()
        th.join()
        out["seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = time.process_time() - c0
        out["peak_rss_mb"] = max(peak[0], rss_mb())
