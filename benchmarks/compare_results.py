"""Do two benchmark runs give the same numbers? Every per-gene metric of every method, track and factor.

Used to show that a change is a pure restructure: run the same ``stdiff benchmark`` command before and
after it (same seeds, ``--threads 1``, a run that stops on patience or step caps, not on time), then::

    python benchmarks/compare_results.py before.json after.json            # to 4 decimals
    python benchmarks/compare_results.py before.json after.json --decimals 6

Prints each method's mean PCC and CRPS before → after and the number of values that differ; exits 1
when any does (or a method is missing).
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _same(a, b, decimals: int) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    return round(a, decimals) == round(b, decimals)


def compare(before: dict, after: dict, decimals: int = 4) -> tuple[int, int, list[str]]:
    """``(values compared, values that differ, report lines)``."""
    n = bad = 0
    lines = []
    for ra, rb in zip(before["runs"], after["runs"], strict=True):
        for track, ta in ra["tracks"].items():
            tb = rb["tracks"].get(track, {}).get("methods", {})
            for method, xa in ta["methods"].items():
                xb = tb.get(method)
                if xb is None:
                    bad += 1
                    lines.append(f"missing after: {track} / {method}")
                    continue
                for gene, ma in xa["per_gene"].items():
                    for key, va in ma.items():
                        n += 1
                        vb = xb["per_gene"][gene][key]
                        if not _same(va, vb, decimals):
                            bad += 1
                            lines.append(f"differs: {track} / {method} / {gene} / {key}: {va} → {vb}")
                mean_a, mean_b = xa["mean"], xb["mean"]
                lines.append(f"{track:16s} {method:24s} PCC {mean_a.get('pcc')} → {mean_b.get('pcc')}, "
                             f"CRPS {mean_a.get('crps')} → {mean_b.get('crps')}")  # fmt: skip
    return n, bad, lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--decimals", type=int, default=4)
    args = p.parse_args()
    with open(args.before) as fa, open(args.after) as fb:
        n, bad, lines = compare(json.load(fa), json.load(fb), args.decimals)
    sys.stdout.write("\n".join(lines) + f"\n{n} values compared, {bad} differ at {args.decimals} decimals\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
