"""Make ``docs/_static/synthetic_tissue.png``: synthetic H&E, a native-resolution zoom and 4 genes.

Usage::

    python benchmarks/make_synthetic_figure.py [--out docs/_static/synthetic_tissue.png] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import resource
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from PIL import Image

from stdiff.datasets._synthetic import DOMAINS, synthetic_tissue

GENES = [
    ("EPCAM", "tumour marker"),
    ("MS4A1", "B-cell marker"),
    ("COL1A1", "stroma marker"),
    ("ERBB2", "hidden within-tumour subclones"),
]


def _pick_zoom(domains: np.ndarray, bin_um: float, win_um: float) -> tuple[int, int]:
    """Upper-left corner (µm) of the window showing the most diverse mix of domains."""
    w = int(win_um / bin_um)
    step = max(1, w // 4)
    best, best_score = (0, 0), -np.inf
    for i in range(0, domains.shape[0] - w + 1, step):
        for j in range(0, domains.shape[1] - w + 1, step):
            sub = domains[i : i + w, j : j + w]
            f = np.bincount(sub.ravel(), minlength=len(DOMAINS)) / sub.size
            tissue = f[1:]
            score = np.sum(tissue > 0.08) + (-(tissue[tissue > 0] * np.log(tissue[tissue > 0])).sum()) - 3 * f[0]
            if score > best_score:
                best, best_score = (i, j), score
    return int(best[0] * bin_um), int(best[1] * bin_um)


def main(out: str = "docs/_static/synthetic_tissue.png", seed: int = 0, size_um: float = 2000.0) -> None:
    synthetic_tissue(size_um=100.0, n_genes=5, seed=seed)  # warm-up: imports
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    sdata = synthetic_tissue(size_um=size_um, n_genes=50, seed=seed)
    elapsed = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = sdata.attrs["synthetic"]
    he_um, bin_um = info["params"]["he_um"], info["params"]["bin_um"]
    he = sdata["he"]
    he = np.moveaxis(np.asarray(next(iter(he["scale0"].values())).values), 0, -1)
    counts = sdata["hr_counts"]
    ext = [0, he.shape[1] * he_um, he.shape[0] * he_um, 0]

    win = 400.0
    zy, zx = _pick_zoom(sdata["domains"].values, bin_um, win)
    crop = he[int(zy / he_um) : int((zy + win) / he_um), int(zx / he_um) : int((zx + win) / he_um)]

    fig, axes = plt.subplots(2, 3, figsize=(13.5, 9.2))
    ax = axes[0, 0]
    ax.imshow(he, extent=ext, interpolation="lanczos")
    ax.add_patch(Rectangle((zx, zy), win, win, fill=False, ec="k", lw=1.5))
    ax.set_title(f"synthetic H&E ({size_um:.0f} µm, {he_um:g} µm/px)")
    ax = axes[0, 1]
    ax.imshow(crop, extent=[zx, zx + win, zy + win, zy], interpolation="nearest")
    ax.set_title(f"zoom {win:.0f} µm at native resolution")
    f = 2  # show 10 µm bins
    for k, (gene, what) in enumerate(GENES):
        ax = axes.flat[2 + k]
        c = counts.sel(c=gene).values
        c = c.reshape(c.shape[0] // f, f, c.shape[1] // f, f).sum((1, 3))
        im = ax.imshow(
            c,
            extent=ext,
            cmap="magma",
            vmin=0,
            vmax=max(1.0, np.percentile(c, 99.5)),
            interpolation="nearest",
        )
        ax.set_title(f"{gene} ({what}), counts / {bin_um * f:g} µm bin")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"stdiff.datasets.synthetic_tissue(size_um={size_um:g}, seed={seed}): {info['n_cells']} cells, "
        f"{info['n_transcripts']:,} transcripts, {len(info['genes'])} genes",
        fontsize=11,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=80, format="png")
    plt.close(fig)
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)
    size_kb = Path(out).stat().st_size / 1024
    print(f"wrote {out} ({size_kb:.0f} KB)")
    print(f"simulation {elapsed:.2f} s, peak RSS {rss1:.0f} MiB (before: {rss0:.0f} MiB)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="docs/_static/synthetic_tissue.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size-um", type=float, default=2000.0)
    a = p.parse_args()
    main(a.out, a.seed, a.size_um)
