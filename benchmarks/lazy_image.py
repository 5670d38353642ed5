"""Peak memory of opening a Visium capture area and reading its histology, as the H&E grows (not a test).

A whole capture area (6.5 × 6.5 mm, 4,900 Visium spots, 20 genes) with a synthetic H&E of 2k, 8k and
25k px per side (3.25, 0.81 and 0.26 µm/px: the same tissue, finer and finer) is written once as a
tiled TIFF and as a SpatialData zarr store (by the current code, streamed). Then, each in a fresh
process whose peak resident memory (RSS) and wall time are recorded, what ``sd.tl.superresolve``
does before its model runs:

- ``tiff``: ``sd.io.from_spots(counts, positions, "he.tif", um_per_px=…)``, the input opened
  (``pp.open_input``: the spots on their grid, 10 µm HR pixels), the whole section's histology read
  once (the default's fit does that) and every chunk's histology window read as
  :func:`stdiff.tl.superresolve` streams them (16 chunks of 1.6 mm, the slide-wide stain reference);
- ``store``: the same from ``spatialdata.read_zarr(store)`` (the pyramid stored on disk);
- ``array``: the same from ``from_spots`` given the H&E as an in-memory ``(H, W, 3)`` numpy array
  (its own size is in the RSS: the question is how many copies are made);
- ``visium`` / ``visium-mtx``: the same from ``sd.io.read_visium`` of a Space Ranger ``outs/`` folder of the
  capture area (counts as ``.h5`` / as the ``filtered_feature_bc_matrix/`` folder), the TIFF as its
  full-resolution image (only with a stdiff that has ``read_visium``).

Usage::

    python benchmarks/lazy_image.py --sizes 2000 8000 25000 --work /tmp/lazy --out benchmarks/results/lazy_image
    PYTHONPATH=<old checkout>/src python benchmarks/lazy_image.py --work /tmp/lazy --label before --measure-only

Writes ``lazy_image_<label>.json`` and ``.md`` under ``--out``. ``--measure-only`` reuses the files
in ``--work`` (so the stores written by the current code can be measured with an older one).
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

AREA_UM = 6500.0  # a Visium capture area
PITCH_UM = 100.0
N_GENES = 20
HR_UM = 10.0  # the Visium default
HE_SCALE = 4  # the "cpu" preset's histology pixels per HR pixel
CHUNK_LR = 16  # 1.6 mm chunks: 16 of them over the capture area
TILE = 512


def lattice() -> np.ndarray:
    """``(array_row, array_col)`` of the Visium spots (hexagonal, 100 µm) over the capture area."""
    dy = PITCH_UM * np.sqrt(3) / 2
    return np.array([(r, c) for r in range(int((AREA_UM - 300) // dy) + 1)
                     for c in range(r % 2, int((AREA_UM - 300) // (PITCH_UM / 2)) + 1, 2)])  # fmt: skip


def spots(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The spots' centres (µm) and smooth Poisson counts, ``(xy µm, counts, genes)``."""
    rng = np.random.default_rng(seed)
    rc = lattice()
    xy = np.column_stack([150 + rc[:, 1] * PITCH_UM / 2, 150 + rc[:, 0] * PITCH_UM * np.sqrt(3) / 2])
    freq = rng.uniform(1, 4, size=(N_GENES, 2)) * 2 * np.pi / AREA_UM
    rate = 5 * (1.2 + np.sin(xy[:, :1] * freq[:, 0] + xy[:, 1:] * freq[:, 1]).T)
    return xy, rng.poisson(rate.T).astype(np.int32), [f"g{i}" for i in range(N_GENES)]


def write_outs(folder: Path, side: int) -> None:
    """A Space Ranger ``outs/`` folder of the capture area: counts as ``.h5`` and as the mtx folder, positions in
    full-resolution pixels of the ``side``² H&E, scalefactors, a 2000 px hires PNG."""
    import json

    import pandas as pd
    from PIL import Image

    from stdiff.datasets._space_ranger import _write_10x_h5, _write_10x_mtx, _write_positions

    xy, counts, genes = spots()
    um, rc = AREA_UM / side, lattice()
    barcodes = [f"AAAC{i:06d}-1" for i in range(len(xy))]
    (folder / "spatial").mkdir(parents=True, exist_ok=True)
    _write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, barcodes, genes)
    _write_10x_mtx(folder / "filtered_feature_bc_matrix", counts, barcodes, genes)
    pos = pd.DataFrame({"barcode": barcodes, "in_tissue": 1, "array_row": rc[:, 0], "array_col": rc[:, 1],
                        "pxl_row_in_fullres": xy[:, 1] / um, "pxl_col_in_fullres": xy[:, 0] / um})  # fmt: skip
    _write_positions(folder / "spatial", pos, "csv")
    scalef = {"spot_diameter_fullres": 65 / um, "tissue_hires_scalef": 2000 / side,
              "fiducial_diameter_fullres": 105 / um, "tissue_lowres_scalef": 600 / side}  # fmt: skip
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalef))
    for name, n in (("tissue_hires_image.png", 2000), ("tissue_lowres_image.png", 600)):
        Image.fromarray(texture(0, 0, n, n, AREA_UM / n)).save(folder / "spatial" / name)


def texture(y0: int, x0: int, h: int, w: int, um_per_px: float) -> np.ndarray:
    """An H&E-like ``(h, w, 3)`` uint8 block at pixel ``(y0, x0)``: pink stroma with purple nuclei every ~12 µm."""
    yy = (np.arange(y0, y0 + h) * um_per_px)[:, None]
    xx = (np.arange(x0, x0 + w) * um_per_px)[None, :]
    nuclei = (np.sin(yy * 0.52) * np.sin(xx * 0.47) > 0.6).astype(np.float32)
    wave = 0.5 + 0.5 * np.sin(yy * 0.013 + xx * 0.009)
    rgb = np.stack([225 - 90 * nuclei - 20 * wave, 170 - 110 * nuclei - 30 * wave, 205 - 40 * nuclei], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_tiff(path: Path, side: int) -> None:
    """A tiled TIFF of ``side``² px written tile by tile (the whole image is never in memory)."""
    import tifffile

    um = AREA_UM / side

    def tiles():
        for y0 in range(0, side, TILE):
            for x0 in range(0, side, TILE):
                block = texture(y0, x0, min(TILE, side - y0), min(TILE, side - x0), um)
                yield np.pad(block, ((0, TILE - block.shape[0]), (0, TILE - block.shape[1]), (0, 0)))

    tifffile.imwrite(path, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb")


def prepare(work: Path, side: int) -> None:
    """The TIFF and the zarr store (built from the TIFF by the current code: lazily)."""
    import stdiff as sd

    tif, store = work / f"he_{side}.tif", work / f"section_{side}.zarr"
    if not tif.exists():
        write_tiff(tif, side)
    if not (work / f"outs_{side}").exists():
        write_outs(work / f"outs_{side}", side)
    if not store.exists():
        xy, counts, genes = spots()
        s = sd.io.from_spots(counts, xy, tif, genes=genes, units="um", um_per_px=AREA_UM / side, platform="visium")
        s.write(store)


def _open(mode: str, work: Path, side: int):
    import spatialdata

    import stdiff as sd

    if mode == "store":
        return spatialdata.read_zarr(work / f"section_{side}.zarr")
    if mode.startswith("visium"):
        counts_file = "filtered_feature_bc_matrix" if mode == "visium-mtx" else None
        tif = work / f"he_{side}.tif"
        return sd.io.read_visium(work / f"outs_{side}", counts_file=counts_file, fullres_image_file=tif)
    xy, counts, genes = spots()
    image: object = work / f"he_{side}.tif"
    if mode == "array":
        import tifffile

        image = tifffile.imread(image)
    return sd.io.from_spots(counts, xy, image, genes=genes, units="um", um_per_px=AREA_UM / side, platform="visium")


def measure(mode: str, work: Path, side: int) -> dict:
    """In this process: open, read the whole section's histology, then every chunk's; times and peak RSS."""
    from stdiff.pp import open_input
    from stdiff.tl._stream import halo_lr, plan_chunks, slide_stain_reference

    t0 = time.perf_counter()
    sdata = _open(mode, work, side)
    t_open = time.perf_counter() - t0
    inp = open_input(sdata, hr_um=HR_UM, he_scale=HE_SCALE)
    t_input = time.perf_counter() - t0 - t_open
    t1 = time.perf_counter()
    whole = inp.section(name="input")
    t_whole = time.perf_counter() - t1
    del whole
    chunks = plan_chunks(inp.shape_lr, CHUNK_LR, halo_lr(8))
    t1 = time.perf_counter()
    slide_stain_reference(inp, chunks)
    windows = [inp.section(prow, pcol).he.shape for _, _, prow, pcol in chunks if inp.mask_lr[prow, pcol].any()]
    t_windows = time.perf_counter() - t1
    return {
        "mode": mode, "side_px": side, "um_per_px": AREA_UM / side, "windows": len(windows) + min(8, len(windows)),
        "open_s": round(t_open, 2), "open_input_s": round(t_input, 2), "whole_section_s": round(t_whole, 2),
        "windows_s": round(t_windows, 2), "total_s": round(time.perf_counter() - t0, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0),
    }  # fmt: skip


def _child(mode: str, work: Path, side: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--work", str(work), "--sizes", str(side)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"mode": mode, "side_px": side, "error": out.stderr.strip().splitlines()[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict], label: str) -> str:
    lines = [f"| H&E ({label}) | µm/px | input | peak RSS | open | whole section | {rows[0].get('windows', '')} "
             "windows | total |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['side_px']}² | | {r['mode']} | failed: {r['error']} | | | | |")
            continue
        lines.append(
            f"| {r['side_px']}² | {r['um_per_px']:.3g} | {r['mode']} | {r['peak_rss_mb']} MB | {r['open_s']} s | "
            f"{r['whole_section_s']} s | {r['windows_s']} s | {r['total_s']} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 25000])
    p.add_argument("--modes", nargs="+", default=["tiff", "store", "array", "visium", "visium-mtx"])
    p.add_argument("--work", type=Path, required=True, help="folder for the TIFFs and stores")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/lazy_image"))
    p.add_argument("--label", default="after")
    p.add_argument("--measure-only", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.work, args.sizes[0])))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for side in args.sizes:
        if not args.measure_only:
            t0 = time.perf_counter()
            prepare(args.work, side)
            print(f"prepared {side}² px in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for mode in args.modes:
            rows.append(_child(mode, args.work, side))
            print(json.dumps(rows[-1]), file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"lazy_image_{args.label}.json").write_text(json.dumps(rows, indent=1))
    (args.out / f"lazy_image_{args.label}.md").write_text(table(rows, args.label) + "\n")
    print(table(rows, args.label))


if __name__ == "__main__":
    main()
