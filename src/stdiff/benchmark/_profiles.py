"""Benchmark profiles: model preset, training budget, samples, seeds and per-dataset settings.

``tiny`` is a smoke test (seconds per method), ``cpu`` the published tables (≈10 min per dataset and
seed on 2 cores, all methods), ``gpu`` the paper's model size (refuses to run without CUDA). Dataset
settings were chosen from the data geometry and training data only (never from test scores).
``--input`` data without ``--he-um`` get histology pixels of ``hr_um / he_scale``, but at most
``max_he_um`` (nuclei must still show: the her2st preset uses 6.25 µm for 200 µm HR pixels) and
never finer than the image's own pixels.
"""

from __future__ import annotations

from typing import Any

from ._methods import Budget

PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "preset": "tiny",
        "budget": {"max_steps": 12, "eval_every": 4, "patience": 2, "max_time_s": 20.0},
        "n_samples": 4,
        "ablation_samples": 2,
        "seeds": [0],
        "he_scale": 2,
        "max_he_um": 25.0,
        "datasets": {
            "synthetic": {"size_um": 1200.0, "genes": 8, "factors": [5], "he_um": 5.0},
            "her2st": {"genes": 8, "factors": [2], "he_um": 25.0},
            "merfish": {"genes": 8, "factors": [5], "he_um": 5.0},
        },
    },
    "cpu": {
        "preset": "cpu",
        "budget": {"max_steps": 800, "eval_every": 25, "patience": 4, "max_time_s": 120.0},
        "n_samples": 8,
        "ablation_samples": 4,
        "seeds": [0, 1, 2],
        "he_scale": 8,
        "max_he_um": 6.25,
        "datasets": {
            "synthetic": {"size_um": 2400.0, "genes": 50, "factors": [5], "he_um": 2.5},
            "her2st": {"genes": 50, "factors": [2], "he_um": 6.25},
            "merfish": {"genes": 50, "factors": [5], "he_um": 1.25},
        },
    },
    "gpu": {
        "preset": "paper",
        "budget": {"max_steps": 50_000, "eval_every": 500, "patience": 10, "max_time_s": 3600.0},
        "n_samples": 16,
        "ablation_samples": 8,
        "seeds": [0, 1, 2],
        "he_scale": 20,
        "max_he_um": 2.0,
        "requires_cuda": True,
        "datasets": {
            "synthetic": {"size_um": 6000.0, "genes": 100, "factors": [10, 5], "he_um": 0.5, "synthetic_he_um": 0.5},
            "her2st": {"genes": 200, "factors": [2], "he_um": 2.0, "overrides": {"tile_lr": 8}},
            "merfish": {"genes": 100, "factors": [5], "he_um": 0.5, "overrides": {"tile_lr": 4}},
        },
    },
}


def profile(name: str) -> dict[str, Any]:
    """The settings of profile ``name`` (``budget`` as a :class:`Budget`)."""
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}; use one of {sorted(PROFILES)}.")
    p = dict(PROFILES[name])
    p["budget"] = Budget(**p["budget"])
    return p


def dataset_settings(name: str, dataset: str) -> dict[str, Any]:
    """The profile's settings for a built-in dataset."""
    return dict(PROFILES[name]["datasets"][dataset])
