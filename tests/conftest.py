"""Shared fixtures: the data folder and small synthetic sections."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    env = os.environ.get("STDIFF_DATA_DIR")
    if env:
        p = Path(env).expanduser()
        if not p.is_absolute() and not p.exists():
            p = REPO_ROOT / p
        return p.resolve()
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session", name="data_root")
def data_root_fixture() -> Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"data root {root} not found: set STDIFF_DATA_DIR to the shared data folder")
    return root


@pytest.fixture(scope="session")
def her2st_dir() -> Path:
    path = data_root() / "her2st_ST_breast_HE"
    if not path.is_dir():
        pytest.skip(f"{path} not found: set STDIFF_DATA_DIR to the shared data folder")
    return path


@pytest.fixture(scope="session")
def synthetic_small():
    """A 800 µm synthetic section with 8 genes (fresh object per test via ``copy``)."""
    import stdiff as sd

    return sd.datasets.synthetic_tissue(size_um=800, n_genes=8, seed=1)


@pytest.fixture
def sdata(synthetic_small):
    import spatialdata

    return spatialdata.deepcopy(synthetic_small)


@pytest.fixture(scope="session")
def tiny_model(synthetic_small):
    """A Diff-ST model trained for a few steps with the tiny preset (factor 5: 100 → 20 µm)."""
    import stdiff as sd

    return sd.tl.train(synthetic_small, factor=5, config="tiny", steps=6, progress=False, seed=0)
