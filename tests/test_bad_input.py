"""Bad input gets a clear error naming the fix, and the user's SpatialData is left unchanged."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from _sdata_helpers import assert_unchanged, snapshot, spots_section

import stdiff as sd
from stdiff.pp import rasterize


@pytest.fixture
def spots(synthetic_small):
    return spots_section(synthetic_small)


def test_normalised_table_names_layer_raw_and_opt_out(spots, tiny_model):
    t = spots.tables["table"]
    t.raw = t.copy()
    t.layers["counts"] = t.X.copy()
    t.X = np.log1p(t.X.toarray().astype(np.float32))
    before = snapshot(spots)
    for call in (
        lambda: rasterize(spots, lr_um=100, factor=5, he_scale=2),
        lambda: sd.tl.superresolve(spots, model=tiny_model, progress=False),
        lambda: sd.tl.train(spots, factor=5, config="tiny", steps=1, progress=False),
    ):
        with pytest.raises(ValueError, match="non-integer") as err:
            call()
        msg = str(err.value)
        assert "layer=" in msg and "adata.raw" in msg and "allow_non_integer=True" in msg and "'counts'" in msg
        assert_unchanged(before, spots)
    # the fixes work: the raw layer, or the opt-out
    assert rasterize(spots, lr_um=100, factor=5, he_scale=2, layer="counts").lr.sum() > 0
    assert rasterize(spots, lr_um=100, factor=5, he_scale=2, allow_non_integer=True).lr.sum() > 0


def test_non_integer_gene_image(sdata):
    sdata.images["hr_counts"] = sdata.images["hr_counts"] * 0.37
    before = snapshot(sdata)
    with pytest.raises(ValueError, match="non-integer values .*allow_non_integer=True"):
        rasterize(sdata, counts_key="hr_counts", lr_um=100, factor=5, he_scale=2)
    assert_unchanged(before, sdata)
    assert rasterize(sdata, counts_key="hr_counts", lr_um=100, factor=5, he_scale=2, allow_non_integer=True).hr.sum()


def test_unknown_layer(spots):
    with pytest.raises(KeyError, match="layer='raw'"):
        rasterize(spots, lr_um=100, factor=5, he_scale=2, layer="raw")


def test_no_expression_at_all(spots, sdata, tiny_model):
    spots.tables["table"].X = spots.tables["table"].X * 0
    before = snapshot(spots)
    with pytest.raises(ValueError, match="No expression.*genes=.*layer="):
        sd.tl.superresolve(spots, model=tiny_model, progress=False)
    assert_unchanged(before, spots)
    # a gene image of zeros (nothing on tissue)
    sdata.images["hr_counts"] = sdata.images["hr_counts"] * 0
    before = snapshot(sdata)
    with pytest.raises(ValueError, match="No expression"):
        sd.tl.superresolve(sdata, model=tiny_model, counts_key="hr_counts", progress=False)
    assert_unchanged(before, sdata)


def test_too_few_spots_for_one_tile(synthetic_small):
    import spatialdata

    small = spatialdata.deepcopy(spots_section(synthetic_small))
    keep = small.tables["table"].obs_names[:3]
    table = small.tables["table"][keep].copy()
    del small.tables["table"]
    small.tables["table"] = table
    before = snapshot(small)
    with pytest.raises(ValueError, match="No training tile of 4×4 LR pixels"):
        sd.tl.train(small, factor=5, config="tiny", steps=1, progress=False, self_supervised=False, spots_as="hr")
    with pytest.raises(ValueError, match="fewer than one tile needs"):
        sd.pp.make_tiles(small, lr_um=100, factor=5, he_scale=2, tile_lr=4, spots_as="hr")
    with pytest.raises(ValueError, match="too small .*self-supervised"):
        sd.tl.superresolve(small, factor=5, config="tiny", train_steps=1, progress=False)
    assert_unchanged(before, small)


@pytest.mark.parametrize("kind", ["random", "truncated", "pickle", "other_dict", "tensor", "directory"])
def test_not_a_model_file(kind, sdata, tiny_model, tmp_path):
    import torch

    path = tmp_path / "model.pt"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        tiny_model.save(path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"format": "stdiff-diffst-1", "x": {1, 2}}))
    elif kind == "other_dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        path.mkdir()
    before = snapshot(sdata)
    with pytest.raises(ValueError, match="not a stdiff") as err:
        sd.tl.superresolve(sdata, model=path, counts_key="hr_counts", progress=False)
    assert "DiffST.save" in str(err.value)
    assert_unchanged(before, sdata)
    with pytest.raises(ValueError, match="not a stdiff"):
        sd.models.DiffST.load(path)


def test_missing_model_file(sdata, tmp_path):
    with pytest.raises(FileNotFoundError, match="No stdiff model"):
        sd.tl.superresolve(sdata, model=tmp_path / "nope.pt", progress=False)
