"""How high can any method's PCC go? A split-half noise ceiling of each benchmark's held-out truth.

The HR truth of every benchmark is counts (transcripts per bin, UMIs per spot), so even a perfect
predictor of the expected expression correlates with it imperfectly. This script estimates that
ceiling on the benchmark's own test tissue, genes, normalisation and truth mask:

1. Thin the test truth: every count goes to half A or half B with probability 1/2 (for Poisson
   counts, A and B are independent Poisson with half the rate), with ``--repeats`` seeds.
2. ``r_half``: per-gene PCC of the normalised maps of ``2A`` and ``2B`` over the truth mask.
3. Spearman–Brown: the reliability of the full-depth truth is ``ρ = 2 r / (1 + r)``; the PCC
   of the expected expression with the full-depth truth is ``√ρ`` — the ceiling ("ceiling").

The ``log1p`` normalisation makes it an approximation (a half has half the depth; ``2A`` restores
the scale, not the noise). Genes with ``r_half ≤ 0`` get ceiling 0. Run::

    python benchmarks/noise_ceiling.py --dataset merfish --dataset synthetic --dataset her2st \
        --out benchmarks/results/noise_ceiling_cpu.json

It needs ``STDIFF_DATA_DIR`` for her2st and MERFISH, like the benchmark.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from stdiff.benchmark._data import prepare, preset
from stdiff.benchmark._metrics import pcc
from stdiff.benchmark._profiles import PROFILES, dataset_settings
from stdiff.pp import fit_normalizer


def split_half(counts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Binomial thinning of integer counts into two halves that sum to them."""
    n = np.rint(np.clip(counts, 0, None)).astype(np.int64)
    a = rng.binomial(n, 0.5)
    return a.astype(np.float64), (n - a).astype(np.float64)


def ceiling(r_half: np.ndarray) -> np.ndarray:
    """Spearman–Brown: PCC of the expected expression with the full-depth truth, from split-half r."""
    r = np.clip(np.asarray(r_half, float), 0.0, None)
    return np.sqrt(2 * r / (1 + r))


def dataset_ceiling(dataset: str, profile: str, repeats: int) -> dict:
    """Per-gene split-half r and ceiling on the test sections of ``dataset`` (benchmark's split and genes)."""
    settings = dataset_settings(profile, dataset)
    spec = preset(dataset, settings)
    tile_lr = int(settings.get("overrides", {}).get("tile_lr", 4))
    out = {}
    for factor in spec.factors:
        split = prepare(spec, factor, tile_lr=tile_lr)
        norm = fit_normalizer(split.train)
        halves = []
        for rep in range(repeats):
            rng = np.random.default_rng([rep, factor])
            rs = []
            for s in split.test:
                a, b = split_half(s.hr, rng)
                rs.append(pcc(norm.transform(2 * a), norm.transform(2 * b), s.truth_mask.astype(bool)))
            halves.append(np.nanmean(np.stack(rs), axis=0))  # per gene, mean over test sections
        r_half = np.nanmean(np.stack(halves), axis=0)
        c = ceiling(r_half)
        out[f"x{factor}"] = {
            "genes": list(split.train[0].genes),
            "test_sections": [s.name for s in split.test],
            "r_half": [float(v) for v in r_half],
            "ceiling": [float(v) for v in c],
            "mean_r_half": float(np.nanmean(r_half)),
            "mean_ceiling": float(np.nanmean(c)),
            "repeats": int(repeats),
        }
        logging.info("%s ×%d: split-half r %.3f, ceiling %.3f", dataset, factor, np.nanmean(r_half), np.nanmean(c))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", action="append", choices=["synthetic", "her2st", "merfish"], required=True)
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    p.add_argument("--repeats", type=int, default=5, help="thinning seeds (default 5)")
    p.add_argument("--out", type=Path, help="JSON output")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = {
        "profile": args.profile,
        "command": " ".join(["python benchmarks/noise_ceiling.py", *(sys.argv[1:] if argv is None else argv)]),
        "datasets": {d: dataset_ceiling(d, args.profile, args.repeats) for d in args.dataset},
    }
    for d, by in res["datasets"].items():
        for f, v in by.items():
            print(f"| {d} {f} | {v['mean_r_half']:.3f} | {v['mean_ceiling']:.3f} |")
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
