"""Peak memory and time of ``sd.tl.superresolve`` as the section grows (not a test; run by hand).

For each section size a synthetic section (H&E + a gene image of raw counts) is written to zarr by
a separate process, then a fresh process reads it lazily, super-resolves it with a small trained
model and writes the result to zarr (streamed). That process's peak resident memory (RSS) and wall
time are recorded, so the numbers cover reading, inference and writing, not the simulation.

Usage::

    python benchmarks/memory.py --sizes 3.2 6.4 12.8 --genes 300 --out benchmarks/results/memory

Writes ``memory.json`` and ``memory.md`` (a table) under ``--out``. Peak RSS should stay nearly flat
across sizes (inference runs chunk by chunk and the output is streamed to disk).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LR_UM = 100.0
FACTOR = 10  # 10 µm HR
BIN_UM = 10.0  # the synthetic truth's bins = the HR grid
HE_SCALE = 2  # the tiny preset's histology pixels per HR pixel
HE_UM = LR_UM / FACTOR / HE_SCALE


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def prepare(size_mm: float, n_genes: int, path: Path) -> None:
    """Simulate a section and write only what inference reads (H&E, gene image) to zarr, chunked."""
    import spatialdata
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    import stdiff as sd

    s = sd.datasets.synthetic_tissue(size_um=size_mm * 1000, n_genes=n_genes, seed=0, he_um=HE_UM, bin_um=BIN_UM)
    counts = s.images["hr_counts"]
    he = s.images["he"]
    he0 = he["scale0"].ds["image"] if hasattr(he, "children") and len(he.children) else he
    out = spatialdata.SpatialData(
        images={
            "he": Image2DModel.parse(
                he0.data,
                dims=("c", "y", "x"),
                c_coords=["r", "g", "b"],
                transformations=get_transformation(he, get_all=True),
                scale_factors=[2, 2, 2],
                chunks=(3, 1024, 1024),
            ),
            "hr_counts": Image2DModel.parse(
                counts.data,
                dims=("c", "y", "x"),
                c_coords=list(counts.coords["c"].values),
                transformations=get_transformation(counts, get_all=True),
                chunks=(min(n_genes, 32), 512, 512),
            ),
        }
    )
    out.write(path, overwrite=True)


def train_model(n_genes: int, path: Path) -> None:
    """A tiny model for the gene panel (quality is not the point here, only the cost of inference)."""
    import stdiff as sd

    s = sd.datasets.synthetic_tissue(size_um=1600, n_genes=n_genes, seed=1, he_um=HE_UM, bin_um=BIN_UM)
    model = sd.tl.train(
        s, factor=FACTOR, lr_um=LR_UM, config="tiny", steps=4, counts_key="hr_counts", progress=False, seed=0
    )
    model.save(path)


def measure(data: Path, model: Path, out: Path, chunk_lr: int | None, steps: int | None) -> dict:
    """Read lazily, super-resolve, write streamed; peak RSS (MB) and seconds of this process."""
    import spatialdata

    import stdiff as sd

    t0 = time.perf_counter()
    s = spatialdata.read_zarr(data)
    sd.tl.superresolve(
        s,
        model=model,
        counts_key="hr_counts",
        chunk_lr=chunk_lr,
        num_inference_steps=steps,
        progress=False,
        device="cpu",
    )
    t1 = time.perf_counter()
    s.write(out, overwrite=True)
    t2 = time.perf_counter()
    el = s.images["stdiff"]
    shape = tuple((el["scale0"].ds["image"] if hasattr(el, "children") and len(el.children) else el).shape)
    return {
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "superresolve_s": round(t1 - t0, 1),
        "write_s": round(t2 - t1, 1),
        "output_shape": list(shape),
    }


def _run(args: list[str]) -> dict:
    env = dict(os.environ)
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise RuntimeError(f"{args} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[3.2, 6.4, 12.8], help="section sides in mm")
    parser.add_argument("--genes", type=int, default=300)
    parser.add_argument("--chunk-lr", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "stdiff-memory-bench")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory"))
    parser.add_argument("--step", choices=["prepare", "train", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work
    model_path = work / f"tiny_{args.genes}genes.pt"
    if args.step == "prepare":
        prepare(args.size, args.genes, work / f"section_{args.size:g}mm.zarr")
        print(json.dumps({"peak_rss_mb": _peak_rss_mb()}))
        return
    if args.step == "train":
        train_model(args.genes, model_path)
        print(json.dumps({}))
        return
    if args.step == "measure":
        res = measure(work / f"section_{args.size:g}mm.zarr", model_path, work / "out.zarr", args.chunk_lr, args.steps)
        print(json.dumps(res))
        return

    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if not model_path.exists():
        _run(["--step", "train", "--genes", str(args.genes), "--work", str(work)])
    rows = []
    for size in args.sizes:
        if not (work / f"section_{size:g}mm.zarr").exists():
            _run(["--step", "prepare", "--size", str(size), "--genes", str(args.genes), "--work", str(work)])
        extra = ["--chunk-lr", str(args.chunk_lr)] if args.chunk_lr else []
        extra += ["--steps", str(args.steps)] if args.steps else []
        res = _run(["--step", "measure", "--size", str(size), "--genes", str(args.genes), "--work", str(work), *extra])
        area = size**2
        res.update(size_mm=size, area_mm2=area, genes=args.genes, s_per_mm2=round(res["superresolve_s"] / area, 2))
        rows.append(res)
        print(json.dumps(res), flush=True)
    (args.out / "memory.json").write_text(json.dumps(rows, indent=1))
    lines = [
        f"Peak RSS and time of `superresolve` + streamed `write` ({args.genes} genes, 10 µm HR, tiny model, "
        f"{args.steps or 'default'} sampler steps, CPU).",
        "",
        "| section | area (mm²) | HR output (G×H×W) | peak RSS (MB) | superresolve (s) | s / mm² | write (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shape = "×".join(map(str, r["output_shape"]))
        lines.append(
            f"| {r['size_mm']:g} mm | {r['area_mm2']:.1f} | {shape} | {r['peak_rss_mb']:.0f} | "
            f"{r['superresolve_s']:.0f} | {r['s_per_mm2']:.2f} | {r['write_s']:.0f} |"
        )
    (args.out / "memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
