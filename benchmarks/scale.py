"""What the default call costs on a whole Visium capture area: time, CPU, memory and held-out r vs area and genes.

A synthetic capture area is built once with :func:`stdiff.io.from_spots` and written to zarr stores
(``--cache``): 6.5 × 6.5 mm of tissue with four tissue types (a smoothed random field), nuclei whose
density and stain follow the type, an H&E at 1 µm/px (6,500² px), Visium spots (55 µm discs, hexagonal,
100 µm pitch) on the tissue, and 18,000 genes whose counts are Poisson around each spot's mixture of
type profiles times its cell count and a per-spot capture (log-normal, sd 0.3). The 1/16 and 1/4 areas
are centred crops of the same slide (1.6 and 3.25 mm). Each configuration then runs in a fresh process that
reads its store (the image lazily) and calls ``sd.tl.superresolve(sdata, genes=<top N by counts>)``
with every default; it reports wall and CPU seconds (user + system), peak RSS (the whole process,
imports and the read store included, sampled every 20 ms), the fit's folds, its
held-out r and the 6-nearest-spots baseline's on the same folds (from the provenance), and with
``--repeat`` whether a second run gives the same map bit for bit. Run::

    python benchmarks/scale.py --out benchmarks/results/scale.json    # the table in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZE_UM = 6500.0
N_GENES = 18_000
N_TYPES = 4
AREAS = {"1/16": 0.25, "1/4": 0.5, "whole": 1.0}  # side fraction of the capture area


def _field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    from scipy import ndimage

    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return (f - f.mean()) / f.std()


def build_slide(seed: int = 0):
    """Image ``(H, W, 3)`` uint8 at 1 µm/px, spot centres ``(n, 2)`` µm, counts ``(n, genes)`` CSR and gene names."""
    import scipy.sparse as sp
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    n = int(SIZE_UM)
    coarse = 650  # 10 µm grid of the tissue types
    kinds = np.stack([_field(rng, (coarse, coarse), 30.0) for _ in range(N_TYPES)])
    types = kinds.argmax(0)
    yy, xx = np.mgrid[0:coarse, 0:coarse] / coarse - 0.5
    tissue = (xx / 0.47) ** 2 + (yy / 0.45) ** 2 + 0.15 * _field(rng, (coarse, coarse), 40.0) < 1.0
    density = np.array([0.6, 1.0, 1.6, 0.9])[types] * tissue  # nuclei per 100 µm²
    # H&E: pink eosin background on tissue, type-dependent tint, dark nuclei
    tint = np.array([[230, 170, 200], [215, 150, 190], [190, 120, 180], [235, 190, 210]], np.float32)
    small = np.where(tissue[..., None], tint[types], 245.0).astype(np.float32)
    img = np.repeat(np.repeat(small, 10, 0), 10, 1)
    img = ndimage.uniform_filter(img, size=(9, 9, 1))
    n_nuc = rng.poisson(density * 1.0)  # per 10 × 10 µm cell of the coarse grid
    cy, cx = np.nonzero(n_nuc)
    reps = n_nuc[cy, cx]
    cy, cx = np.repeat(cy, reps) * 10 + rng.uniform(0, 10, reps.sum()), np.repeat(cx, reps) * 10 + rng.uniform(0, 10, reps.sum())
    dy, dx = np.mgrid[-3:4, -3:4]
    disc = dy**2 + dx**2 <= 9
    py = (cy[:, None].round().astype(int) + dy[disc][None]).ravel().clip(0, n - 1)
    px = (cx[:, None].round().astype(int) + dx[disc][None]).ravel().clip(0, n - 1)
    img[py, px] = (80, 40, 120)
    img = np.clip(img + rng.normal(0, 6, (n, n, 1)), 0, 255).astype(np.uint8)
    # Visium lattice on the tissue
    rows = np.arange(60, SIZE_UM - 60, 100 * np.sqrt(3) / 2)
    xy = np.array([(x + 50 * (i % 2), y) for i, y in enumerate(rows) for x in np.arange(60, SIZE_UM - 110, 100.0)])
    ci, cj = (xy[:, 1] / 10).astype(int), (xy[:, 0] / 10).astype(int)
    on = tissue[ci, cj]
    xy, ci, cj = xy[on], ci[on], cj[on]
    # type fractions and cells under each spot (27.5 µm radius ≈ 3 coarse pixels)
    frac = np.stack([ndimage.uniform_filter((types == k) & tissue, 5.0)[ci, cj] for k in range(N_TYPES)], 1)
    cells = ndimage.uniform_filter(density, 5.0)[ci, cj] * 23.8
    profiles = rng.lognormal(-1.0, 1.5, (N_TYPES, N_GENES)) * rng.lognormal(0, 1.0, (1, N_GENES))
    profiles /= profiles.sum(1, keepdims=True)
    capture = rng.lognormal(0, 0.3, len(xy))
    lam = (frac @ profiles) * (cells * capture * 400.0)[:, None]
    counts = sp.csr_matrix(rng.poisson(lam).astype(np.int32))
    genes = [f"gene{g:05d}" for g in range(N_GENES)]
    return img, xy, counts, genes


def write_stores(cache: Path) -> dict[str, Path]:
    """One zarr store per area (crops of the one slide), built once."""
    import anndata as ad

    import stdiff as sd

    paths = {a: cache / f"capture_area_{a.replace('/', '_')}.zarr" for a in AREAS}
    if all(p.exists() for p in paths.values()):
        return paths
    img, xy, counts, genes = build_slide()
    for area, side in AREAS.items():  # centred crops
        n = int(SIZE_UM * side)
        o = int((SIZE_UM - n) / 2)
        keep = (xy[:, 0] > o + 60) & (xy[:, 1] > o + 60) & (xy[:, 0] < o + n - 60) & (xy[:, 1] < o + n - 60)
        adata = ad.AnnData(counts[keep])
        adata.var_names, adata.obs_names = genes, [f"s{i}" for i in np.nonzero(keep)[0]]
        sdata = sd.io.from_spots(adata, xy[keep] - o, img[o : o + n, o : o + n], units="um", um_per_px=1.0,
                                 platform="visium")  # fmt: skip
        sdata.write(paths[area], overwrite=True)
    return paths


class _PeakRSS:
    """The peak resident set size of this process while it runs, sampled every 20 ms.

    (``getrusage``'s ``ru_maxrss`` would also count the parent's peak, inherited across ``fork``/``exec``.)
    """

    def __init__(self) -> None:
        import os
        import threading

        import psutil

        self.peak, self._proc, self._stop = 0, psutil.Process(os.getpid()), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self._proc.memory_info().rss) / 2**30


def run_one(store: str, n_genes: int, repeat: bool) -> dict:
    """One default call on ``store`` in this process: its cost and what its provenance says."""
    import logging

    import spatialdata as sd_mod

    import stdiff as sd

    logging.basicConfig(level=logging.WARNING)
    sdata = sd_mod.read_zarr(store)
    table = sdata.tables["table"]
    genes = list(table.var_names[np.argsort(-np.asarray(table.X.sum(0)).ravel(), kind="stable")[:n_genes]])
    peak = _PeakRSS()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    sd.tl.superresolve(sdata, genes=genes, progress=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    peak_gb = peak.stop()
    prov = sdata.attrs["stdiff"]["stdiff"]
    cal = prov.get("calibration", {})
    out = {"spots": int(table.n_obs), "genes": n_genes, "wall_s": wall,
           "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), "sys_s": r1.ru_stime - r0.ru_stime,
           "peak_rss_gb": peak_gb, "held_out_r": cal.get("held_out_pcc"),
           "nearest6_r": cal.get("nearest6_pcc"), "coverage90": cal.get("coverage_held_out"),
           "hr_px": list(sdata.images["stdiff"]["scale0"]["image"].shape[1:])
           if hasattr(sdata.images["stdiff"], "keys") else list(sdata.images["stdiff"].shape[1:])}  # fmt: skip
    if repeat:
        from stdiff._spatial import finest_level

        first = finest_level(sdata.images["stdiff"])
        sd.tl.superresolve(sdata, genes=genes, progress=False, key_added="again")
        out["same_map"] = bool(np.array_equal(first, finest_level(sdata.images["again"])))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--areas", default="1/16,1/4,whole")
    p.add_argument("--genes", default="20,100,500")
    p.add_argument("--cache", default="benchmarks/.cache")
    p.add_argument("--out", default=None)
    p.add_argument("--repeat", action="store_true", help="run each configuration twice and compare the maps")
    p.add_argument("--one", nargs=2, metavar=("STORE", "GENES"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one[0], int(a.one[1]), a.repeat)))
        return
    paths = write_stores(Path(a.cache))
    rows = []
    for area in a.areas.split(","):
        for g in (int(x) for x in a.genes.split(",")):
            cmd = [sys.executable, __file__, "--one", str(paths[area]), str(g)] + (["--repeat"] if a.repeat else [])
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = {"area": area, **json.loads(res.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"rows": rows, "command": " ".join(sys.argv)}, indent=1))


if __name__ == "__main__":
    main()
