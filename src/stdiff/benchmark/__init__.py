"""Benchmark harness: stdiff against baselines on held-out tissue.

Run ``python -m stdiff.benchmark --help`` or ``stdiff benchmark --help``; see ``docs/benchmarks.md``.
"""

from ._harness import METHODS, PROFILES, main, run_benchmark, to_markdown
from ._metrics import evaluate, pcc, rmse, ssim, summarize

__all__ = [
    "METHODS",
    "PROFILES",
    "evaluate",
    "main",
    "pcc",
    "rmse",
    "run_benchmark",
    "ssim",
    "summarize",
    "to_markdown",
]
