"""Time ``stdiff.io.read_spots_table`` on a large bin table (Visium HD-like: 10⁶ barcodes).

Writes a positions table (Parquet: barcode, x, y on a square 8 µm lattice, rows shuffled) and its
counts (``.h5ad``, sparse, barcodes in another order than the positions), then times the whole read
(files → matched barcodes → :func:`~stdiff.io.from_spots` → SpatialData) and prints the seconds and
the CPU time (the wall time depends on what else the machine runs; the load average is recorded) and
the peak memory::

    python benchmarks/read_spots_table.py --n 1000000 --genes 20
    python benchmarks/read_spots_table.py --n 16000 --json benchmarks/results/read_spots_table.json

Barcodes used to be matched with a set rebuilt per barcode (quadratic: 16,000 barcodes took about
40 s); they are matched by hash now (linear).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def write_inputs(folder: Path, n: int, n_genes: int, pitch_um: float, seed: int = 0) -> tuple[Path, Path, np.ndarray]:
    """``(positions.parquet, counts.h5ad, image)`` of ``n`` bins on a square lattice, in shuffled orders."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n)
    xy = np.c_[idx % side, idx // side] * pitch_um + pitch_um
    barcodes = np.array([f"s_008um_{i // side:05d}_{i % side:05d}-1" for i in idx], dtype=object)
    order = rng.permutation(n)
    pos = pd.DataFrame({"barcode": barcodes[order], "x": xy[order, 0], "y": xy[order, 1]})
    pos.to_parquet(folder / "positions.parquet")
    counts = sp.random(n, n_genes, density=0.1, format="csr", random_state=seed, dtype=np.float64)
    counts.data = np.ceil(counts.data * 5)
    other = rng.permutation(n)
    adata = ad.AnnData(counts[other], obs=pd.DataFrame(index=barcodes[other]),
                       var=pd.DataFrame(index=[f"gene{g}" for g in range(n_genes)]))  # fmt: skip
    adata.write_h5ad(folder / "counts.h5ad")
    image = np.full((side + 2, side + 2, 3), 210, np.uint8)  # one pixel per bin
    return folder / "positions.parquet", folder / "counts.h5ad", image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="barcodes (default 10⁶)")
    p.add_argument("--genes", type=int, default=20)
    p.add_argument("--pitch-um", type=float, default=8.0)
    p.add_argument("--json", help="append the result to this JSON list")
    args = p.parse_args(argv)
    import stdiff as sd

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        positions, counts, image = write_inputs(Path(tmp), args.n, args.genes, args.pitch_um)
        written = time.perf_counter() - t0
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        sdata = sd.io.read_spots_table(positions, counts, image, units="um", um_per_px=args.pitch_um,
                                       spot_diameter_um=args.pitch_um)  # fmt: skip
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    t = sdata["table"]
    assert t.n_obs == args.n and t.n_vars == args.genes
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"n": args.n, "genes": args.genes, "read_spots_table_s": round(seconds, 2), "cpu_s": round(cpu, 2),
              "load_average_1min": round(load, 1), "cpus": os.cpu_count(), "inputs_written_s": round(written, 2),
              "peak_rss_mb": round(peak_mb), "stdiff": sd.__version__}  # fmt: skip
    print(json.dumps(result))
    if args.json:
        path = Path(args.json)
        rows = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps([*rows, result], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
