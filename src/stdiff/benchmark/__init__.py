"""Benchmark harness: stdiff against baselines on held-out tissue, reference-trained and self-supervised.

Run ``stdiff benchmark --help`` (or ``python -m stdiff.benchmark --help``); see ``docs/benchmarks.md``.
Modules: :mod:`._data` (datasets and presets), :mod:`._splits` (train/test/validation splits),
:mod:`._features` (histology features), :mod:`._methods` (one adapter per method),
:mod:`._metrics` (PCC/RMSE/SSIM), :mod:`._probabilistic` (CRPS, coverage, spread-skill),
:mod:`._stats` (seeds, paired bootstrap), :mod:`._run` (the protocol), :mod:`._report` (markdown),
:mod:`._cli` (command line).
"""

from ._cli import build_parser, main, run_benchmark
from ._methods import METHODS, TRACKS
from ._metrics import block_artefact_index, evaluate, pcc, rmse, ssim, summarize
from ._probabilistic import coverage, crps_ensemble, crps_gaussian, spread_skill
from ._profiles import PROFILES
from ._report import to_markdown

__all__ = [
    "METHODS", "PROFILES", "TRACKS", "block_artefact_index", "build_parser", "coverage", "crps_ensemble",
    "crps_gaussian", "evaluate", "main", "pcc", "rmse", "run_benchmark", "spread_skill", "ssim", "summarize",
    "to_markdown",
]  # fmt: skip
