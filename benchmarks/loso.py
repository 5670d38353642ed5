"""her2st leave-one-section-out: run the folds, or summarise their results as one table.

Each fold is an ordinary ``stdiff benchmark`` run with one of B4, C2–C5 as the test section and the
other four as training sections (the last of them is the validation section)::

    python benchmarks/loso.py --run --out-dir benchmarks/results          # 5 folds, 3 seeds each
    python benchmarks/loso.py benchmarks/results/her2st_loso_*_cpu.json   # the table (markdown)

(The C5 fold is the default split of ``stdiff benchmark --dataset her2st``; pass its JSON too.)

The table gives, per test section, the mean per-gene PCC (mean ± sd over seeds) of each method,
stdiff's gain over the mask-aware nearest map, and the calibration of stdiff's samples (mean over
seeds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SECTIONS = ("B4", "C2", "C3", "C4", "C5")
METHODS = "bicubic,nearest_masked,stdiff"


def run_folds(out_dir: Path, seeds: str, sections: list[str]) -> list[Path]:
    """Run one benchmark per test section; returns the JSON paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for test in sections:
        train = ",".join(s for s in SECTIONS if s != test)
        out = out_dir / f"her2st_loso_{test}_cpu.json"
        cmd = [sys.executable, "-m", "stdiff.benchmark", "--dataset", "her2st", "--profile", "cpu", "--seeds", seeds,
               "--threads", "1", "--tracks", "reference", "--methods", METHODS, "--train", train, "--test", test,
               "--out", str(out)]  # fmt: skip
        subprocess.run(cmd, check=True)
        paths.append(out)
    return paths


def table(paths: list[Path]) -> str:
    """Markdown table of the folds' reference-track results."""
    rows = ["| test section | training sections | bicubic | nearest (mask-aware) | stdiff | stdiff − nearest "
            "| stdiff 90% coverage | stdiff spread-skill |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    gains = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        run = doc["runs"][0]
        methods = run["tracks"]["reference"]["methods"]
        cells = []
        for m in ("bicubic", "nearest_masked", "stdiff"):
            r = methods.get(m)
            cells.append("–" if r is None else f"{r['mean']['pcc']:.3f} ± {r['sd']['pcc']:.3f}")
        per_seed = [s["mean"]["pcc"] for s in methods["stdiff"]["seeds"]]
        near = methods["nearest_masked"]["mean"]["pcc"]
        gain = sum(per_seed) / len(per_seed) - near
        gains.append(gain)
        info = run["info"]
        st = methods["stdiff"]["mean"]
        calib = f"{st['coverage90']:.2f} | {st['spread_skill']:.2f}"
        rows.append(f"| {', '.join(info['test_sections'])} | {', '.join(info['train_sections'])} | "
                    f"{' | '.join(cells)} | {gain:+.3f} | {calib} |")  # fmt: skip
    rows.append(f"\nMean gain over the {len(gains)} folds: {sum(gains) / len(gains):+.3f}.")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", type=Path, help="fold JSONs to summarise")
    parser.add_argument("--run", action="store_true", help="run the folds first")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="test sections of the folds to run")
    args = parser.parse_args(argv)
    paths = list(args.results)
    if args.run:
        paths += run_folds(args.out_dir, args.seeds, args.sections.split(","))
    if not paths:
        parser.error("give fold JSONs or --run")
    sys.stdout.write(table(list(dict.fromkeys(paths))) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
