"""Where the default call spends its time and memory: cProfile and tracemalloc of one ``superresolve``.

Reads a store written by ``benchmarks/scale.py`` (default: the whole synthetic capture area) and calls
``sd.tl.superresolve(sdata, genes=<top N by counts>)`` with every default, twice in separate passes:
once under cProfile (the functions with the most cumulative and own time) and once under tracemalloc
(the peak of Python-tracked allocations, numpy arrays included, and the lines that held the most at
that peak). Run::

    python benchmarks/scale.py --areas whole --genes 100          # writes the store once
    python benchmarks/profile_default.py --genes 100 --out benchmarks/results/profile_default.txt
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np


def _call(store: str, n_genes: int):
    import spatialdata as sd_mod

    import stdiff as sd

    sdata = sd_mod.read_zarr(store)
    table = sdata.tables["table"]
    genes = list(table.var_names[np.argsort(-np.asarray(table.X.sum(0)).ravel(), kind="stable")[:n_genes]])
    return lambda: sd.tl.superresolve(sdata, genes=genes, progress=False)


def profile_time(store: str, n_genes: int, top: int) -> str:
    run = _call(store, n_genes)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    prof = cProfile.Profile()
    prof.runcall(run)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out = io.StringIO()
    out.write(f"wall {wall:.1f} s (under cProfile), user {r1.ru_utime - r0.ru_utime:.1f} s, "
              f"system {r1.ru_stime - r0.ru_stime:.1f} s\n")  # fmt: skip
    for key in ("cumulative", "tottime"):
        out.write(f"\n--- top {top} by {key} ---\n")
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key).print_stats(top)
    return out.getvalue()


def profile_memory(store: str, n_genes: int, top: int) -> str:
    run = _call(store, n_genes)
    tracemalloc.start(8)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    peak_snapshot = {"peak": 0, "snap": None}

    # sample the heaviest moment: snapshot whenever the traced peak has grown since the last check
    import threading

    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            cur, peak = tracemalloc.get_traced_memory()
            if cur > peak_snapshot["peak"]:
                peak_snapshot["peak"] = cur
                peak_snapshot["snap"] = tracemalloc.take_snapshot()
            stop.wait(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    run()
    stop.set()
    thread.join()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out = io.StringIO()
    out.write(f"traced peak {(peak - base) / 2**20:.0f} MB above the read store; "
              f"largest sampled moment {(peak_snapshot['peak'] - base) / 2**20:.0f} MB, held by:\n")  # fmt: skip
    if peak_snapshot["snap"] is not None:
        for stat in peak_snapshot["snap"].statistics("lineno")[:top]:
            frame = stat.traceback[0]
            out.write(f"  {stat.size / 2**20:8.1f} MB  {Path(frame.filename).name}:{frame.lineno}\n")
    return out.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="benchmarks/.cache/capture_area_whole.zarr")
    p.add_argument("--genes", type=int, default=100)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    text = f"store {a.store}, {a.genes} genes\n\n" + profile_time(a.store, a.genes, a.top)
    text += "\n" + profile_memory(a.store, a.genes, a.top)
    if a.out:
        Path(a.out).write_text(text)
    else:
        import sys

        sys.stdout.write(text)


if __name__ == "__main__":
    main()
