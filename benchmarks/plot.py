"""Plots of benchmark (v2) results: per-gene PCC per method, and reliability of the sampling methods.

Usage::

    python benchmarks/plot.py benchmarks/results/synthetic_cpu.json [more.json ...] --out docs/_static

writes, per result file,

- ``bench_{dataset}_pcc.png``: one panel per factor and track, the per-gene PCC (seed-averaged) of
  every method, genes sorted by the mask-aware nearest (or bicubic) PCC;
- ``bench_{dataset}_reliability.png``: one panel per factor and track, binned predicted spread
  (``rms sd · √((n+1)/n)``) against the binned RMSE of the ensemble mean for every method that
  samples (first seed); a calibrated ensemble lies on the diagonal, an over-confident one below it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ORDER = [
    "bicubic", "nearest", "nearest_masked", "ridge", "istar", "unet", "stdiff",
    "stdiff_no_modulation", "stdiff_no_cross_attention", "stdiff_no_gene_graph",
    "stdiff_ko_modulation", "stdiff_ko_cross_attention", "stdiff_ko_gene_graph",
]  # fmt: skip
STYLE = {
    "bicubic": dict(color="0.35", marker="s"),
    "nearest": dict(color="0.65", marker="s"),
    "nearest_masked": dict(color="0.1", marker="s"),
    "ridge": dict(color="tab:olive", marker="^"),
    "istar": dict(color="tab:brown", marker="^"),
    "unet": dict(color="tab:blue", marker="D"),
    "stdiff": dict(color="tab:red", marker="o"),
    "stdiff_no_modulation": dict(color="tab:purple", marker="v"),
    "stdiff_no_cross_attention": dict(color="tab:green", marker="v"),
    "stdiff_no_gene_graph": dict(color="tab:orange", marker="v"),
    "stdiff_ko_modulation": dict(color="plum", marker="x"),
    "stdiff_ko_cross_attention": dict(color="lightgreen", marker="x"),
    "stdiff_ko_gene_graph": dict(color="navajowhite", marker="x"),
}
BOLD = ("stdiff", "nearest_masked", "unet")


def _panels(res: dict) -> list[tuple[dict, str, dict]]:
    return [(run, track, tr) for run in res["runs"] for track, tr in run.get("tracks", {}).items() if tr.get("methods")]


def _pcc(run: dict, methods: dict, name: str) -> np.ndarray:
    per_gene = methods[name]["per_gene"]
    return np.array([np.nan if per_gene[g]["pcc"] is None else per_gene[g]["pcc"] for g in run["genes"]])


def plot_pcc(res: dict, path: Path) -> bool:
    """Per-gene PCC of every method; one panel per factor and track."""
    panels = _panels(res)
    if not panels:
        return False
    n_genes = len(panels[0][0]["genes"])
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(9, 0.17 * n_genes + 5), 3.6 * len(panels)), squeeze=False)
    for ax, (run, track, tr) in zip(axes[:, 0], panels):
        ms = tr["methods"]
        names = [n for n in ORDER if n in ms and ms[n]["mean"].get("pcc") is not None]
        if not names:
            continue
        ref_name = next((n for n in ("nearest_masked", "bicubic") if n in names), names[0])
        ref = _pcc(run, ms, ref_name)
        order = np.argsort(np.where(np.isfinite(ref), ref, -2))
        x = np.arange(len(order))
        for n in names:
            v = _pcc(run, ms, n)[order]
            ax.plot(x, v, lw=1.6 if n in BOLD else 0.8, ms=3.5 if n in BOLD else 2.5,
                    label=f"{n} ({np.nanmean(v):.3f})", alpha=1 if n in BOLD else 0.75,
                    **STYLE.get(n, {}))  # fmt: skip
        ax.set_xticks(x)
        ax.set_xticklabels([run["genes"][i] for i in order], rotation=90, fontsize=6)
        ax.set_ylabel("PCC (test tissue)")
        ax.set_title(f"{res['dataset']} ×{run['factor']}, {track.replace('_', '-')} track: LR {run['lr_um']:g} µm → "
                     f"HR {run['hr_um']:g} µm ({res['profile']} profile)", fontsize=10)  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method (mean PCC)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def plot_reliability(res: dict, path: Path) -> bool:
    """Binned spread against binned RMSE of the ensemble mean, per sampling method; one panel per factor/track."""
    panels = [(r, t, tr) for r, t, tr in _panels(res) if any((m.get("reliability") or {}).get("spread")
                                                            for m in tr["methods"].values())]  # fmt: skip
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, (run, track, tr) in zip(axes[0], panels):
        top = 0.0
        for n in ORDER:
            rel = (tr["methods"].get(n) or {}).get("reliability") or {}
            if not rel.get("spread"):
                continue
            ax.plot(rel["spread"], rel["rmse"], "-", lw=1.6 if n == "stdiff" else 0.9, label=n, **STYLE.get(n, {}))
            top = max(top, max(rel["spread"]), max(rel["rmse"]))
        ax.plot([0, top], [0, top], color="0.5", ls="--", lw=1, label="calibrated")
        ax.set_xlabel("predicted spread, rms sd·√((n+1)/n)")
        ax.set_ylabel("RMSE of the ensemble mean")
        ax.set_title(f"{res['dataset']} ×{run['factor']}, {track.replace('_', '-')}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="benchmark JSON files")
    p.add_argument("--out", default="docs/_static", help="output folder (default docs/_static)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in args.results:
        res = json.loads(Path(f).read_text())
        ds = res["dataset"]
        made = []
        for kind, fn in (("pcc", plot_pcc), ("reliability", plot_reliability)):
            if fn(res, out / f"bench_{ds}_{kind}.png"):
                made.append(str(out / f"bench_{ds}_{kind}.png"))
        print(f"{f}: wrote {', '.join(made) or 'nothing (no v2 runs)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
