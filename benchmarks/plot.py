"""Plots of benchmark results: PCC per gene per method, and sampler steps against PCC and time.

Usage::

    python benchmarks/plot.py benchmarks/results/synthetic_cpu.json [more.json ...] --out docs/_static

writes ``bench_{dataset}_pcc.png`` (one panel per run/factor: per-gene PCC of every method, genes
sorted by the bicubic PCC) and ``bench_{dataset}_steps.png`` (fast sampler at 10/25/50 steps and
1000-step DDPM on the same test tiles: mean PCC and seconds per tile).
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
    "bicubic", "nearest", "histology", "unet", "stdiff", "stdiff_sample_mean", "stdiff_1sample", "stdiff_ablation_n",
    "stdiff_no_modulation", "stdiff_no_cross_attention", "stdiff_no_gene_graph",
]  # fmt: skip
STYLE = {
    "bicubic": dict(color="0.35", marker="s"),
    "nearest": dict(color="0.65", marker="s"),
    "histology": dict(color="tab:brown", marker="^"),
    "unet": dict(color="tab:blue", marker="D"),
    "stdiff": dict(color="tab:red", marker="o"),
    "stdiff_sample_mean": dict(color="darkred", marker="x"),
    "stdiff_1sample": dict(color="salmon", marker="o"),
    "stdiff_ablation_n": dict(color="lightcoral", marker="."),
    "stdiff_no_modulation": dict(color="tab:purple", marker="v"),
    "stdiff_no_cross_attention": dict(color="tab:green", marker="v"),
    "stdiff_no_gene_graph": dict(color="tab:orange", marker="v"),
}


def _pcc(run, name):
    per_gene = run["methods"][name]["per_gene"]
    return np.array([np.nan if per_gene[g]["pcc"] is None else per_gene[g]["pcc"] for g in run["genes"]])


def plot_pcc(res: dict, path: Path) -> None:
    """Per-gene PCC of every method (genes sorted by bicubic PCC); one panel per run."""
    runs = res["runs"]
    fig, axes = plt.subplots(len(runs), 1, figsize=(max(9, 0.17 * len(runs[0]["genes"]) + 5), 3.6 * len(runs)),
                             squeeze=False)  # fmt: skip
    for ax, run in zip(axes[:, 0], runs):
        names = [n for n in ORDER if n in run["methods"]]
        ref = _pcc(run, "bicubic") if "bicubic" in names else _pcc(run, names[0])
        order = np.argsort(np.where(np.isfinite(ref), ref, -2))
        x = np.arange(len(order))
        for n in names:
            v = _pcc(run, n)[order]
            mean = np.nanmean(v)
            ax.plot(x, v, lw=1.6 if n == "stdiff" else 0.8, ms=3.5 if n == "stdiff" else 2.5,
                    label=f"{n} ({mean:.3f})", alpha=1 if n in ("stdiff", "bicubic", "unet") else 0.75,
                    **STYLE.get(n, {}))  # fmt: skip
        ax.set_xticks(x)
        ax.set_xticklabels([run["genes"][i] for i in order], rotation=90, fontsize=6)
        ax.set_ylabel("PCC (held-out tissue)")
        ax.set_title(f"{res['dataset']} ×{run['factor']}: LR {run['lr_um']:g} µm → HR {run['hr_um']:g} µm "
                     f"({res['profile']} profile)", fontsize=10)  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method (mean PCC)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_steps(res: dict, path: Path) -> bool:
    """Mean PCC and seconds per tile against sampler steps (DDIM 10/25/50 vs DDPM 1000)."""
    runs = [r for r in res["runs"] if any(s["phase"] == "sample_tiles" for s in r.get("speed", []))]
    if not runs:
        return False
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 3.8), squeeze=False)
    for ax, run in zip(axes[0], runs):
        sp = [s for s in run["speed"] if s["phase"] == "sample_tiles"]
        ddim = sorted((s for s in sp if s["sampler"] == "ddim"), key=lambda s: s["steps"])
        ddpm = [s for s in sp if s["sampler"] == "ddpm"]
        ax.plot([s["steps"] for s in ddim], [s["pcc_mean"] for s in ddim], "o-", color="tab:red",
                label="DDIM, 1 finished sample")  # fmt: skip
        for s in ddpm:
            ax.plot([s["steps"]], [s["pcc_mean"]], "*", ms=12, color="tab:red", label=f"DDPM-{s['steps']}, 1 sample")
        first = [s for s in ddim + ddpm if s.get("first_step_pcc_mean") is not None]
        if first:
            ax.plot([s["steps"] for s in first], [s["first_step_pcc_mean"] for s in first], "^:", color="darkred",
                    label="first-step E[x0] (stdiff's mean estimate)")  # fmt: skip
        bic = [s["bicubic_pcc_mean"] for s in sp if s.get("bicubic_pcc_mean") is not None]
        if bic:
            ax.axhline(bic[0], color="0.4", ls="--", lw=1, label="bicubic (same tiles)")
        ax.set_xscale("log")
        ax.set_xlabel("sampler steps")
        ax.set_ylabel(f"mean PCC ({sp[0]['tiles']} test tiles, 1 sample)")
        ax2 = ax.twinx()
        ax2.plot([s["steps"] for s in ddim + ddpm], [s["s_per_tile"] for s in ddim + ddpm], "s--", color="tab:blue",
                 label="s / tile")  # fmt: skip
        ax2.set_yscale("log")
        ax2.set_ylabel("seconds per tile per sample", color="tab:blue")
        ax.set_title(f"{res['dataset']} ×{run['factor']}", fontsize=10)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
        ax.grid(alpha=0.3)
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
        plot_pcc(res, out / f"bench_{ds}_pcc.png")
        made = [f"bench_{ds}_pcc.png"]
        if plot_steps(res, out / f"bench_{ds}_steps.png"):
            made.append(f"bench_{ds}_steps.png")
        print(f"{f}: wrote {', '.join(str(out / m) for m in made)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
