"""Interval images: ``superresolve(..., quantiles=(0.05, 0.95))`` writes one image per predictive quantile.

They come from the default's calibrated predictive distribution (SpotRate) or a Diff-ST model's samples,
are blended, conserved, written, named and replaced like the std, and bad levels (or a model that cannot
give them) are refused before any work with the SpatialData unchanged.
"""

from __future__ import annotations

import gc
from types import SimpleNamespace

import numpy as np
import pytest
import spatialdata
from _sdata_helpers import assert_unchanged, snapshot, spots_section

import stdiff as sd
import stdiff.tl._stream as stream
from stdiff._constants import Key
from stdiff.models._diffst_prediction import predictive_summary
from stdiff.pp._input import open_input
from stdiff.tl._stream import predict_streamed
from stdiff.tl._write import written_by_stdiff


@pytest.fixture
def spots(synthetic_small):
    return spots_section(synthetic_small)


def _img(sdata, key):
    el = sdata.images[key]
    return np.asarray(el["scale0"].image.data if hasattr(el, "children") and len(el.children) else el.data)


XY = (("x", "y"), ("x", "y"))


def _levels(el):
    return list(el.keys()) if hasattr(el, "children") else []


def _no_work(monkeypatch):
    import stdiff.tl._superresolve as srmod

    def boom(*a, **k):
        raise AssertionError("the work started before the call was refused")

    monkeypatch.setattr(srmod, "predict_streamed", boom)
    monkeypatch.setattr(srmod, "_learn", boom)


class _LocalModel:
    """Each HR pixel gets its LR pixel's counts / f² on tissue; quantiles are fixed multiples of that mean."""

    def __init__(self, genes, factor):
        self.genes, self.factor = list(genes), factor
        self.config = SimpleNamespace(tile_lr=4, sampler=SimpleNamespace(n_samples=2))

    def predict_section(self, section, *, seed=0, progress=False, quantiles=(), **kwargs):
        f = self.factor
        up = (np.kron(section.lr / f**2, np.ones((f, f), np.float32)) * section.mask_hr).astype(np.float32)
        out = {"mean": up, "std": (0.1 * up + section.mask_hr).astype(np.float32)}
        for q in quantiles:
            out[Key.pred.quantile(q)] = (2 * q * up).astype(np.float32)
        return out


def test_quantile_names():
    assert [Key.pred.quantile(q) for q in (0.05, 0.5, 0.95, 0.975, 0.001)] == ["q05", "q50", "q95", "q97.5", "q0.1"]
    assert Key.img.quantile("res", 0.05) == "res_q05"
    assert Key.pred.is_quantile("q97.5") and not Key.pred.is_quantile("std") and not Key.pred.is_quantile(None)


def test_the_default_writes_quantile_images_over_the_mean(spots):
    sd.tl.superresolve(spots, hr_um=20, quantiles=[0.95, 0.05], progress=False)
    names = ["stdiff", "stdiff_std", "stdiff_q05", "stdiff_q95"]
    assert spots.attrs["stdiff"]["stdiff"]["images"] == names
    assert spots.attrs["stdiff"]["stdiff"]["quantiles"] == [0.05, 0.95]
    mean, lo, hi = (_img(spots, k) for k in ("stdiff", "stdiff_q05", "stdiff_q95"))
    assert lo.shape == hi.shape == mean.shape and mean.max() > 0
    assert (lo <= hi).all() and (lo <= mean + 1e-5).all()  # a count's 5% quantile never exceeds its mean
    assert (hi[mean >= 1] >= mean[mean >= 1]).all() and (hi > lo).mean() > 0.2
    assert (lo == np.round(lo)).all()  # one chunk, no rescaling: whole counts of the predictive distribution
    assert (hi[mean == 0] == 0).all()  # off tissue: nothing
    from spatialdata.transformations import get_transformation

    ref = spots.images["stdiff"]
    for key in ("stdiff_q05", "stdiff_q95"):
        el = spots.images[key]
        assert el.attrs["stdiff"]["kind"] == key.rsplit("_", 1)[1] and written_by_stdiff(spots, key)
        assert type(el) is type(ref) and _levels(el) == _levels(ref)  # the same pyramid (none at 50 × 50 px)
        assert list(el.coords["c"].values) == list(ref.coords["c"].values) == list(spots.tables["table"].var_names)
        tf = get_transformation(el, get_all=True)
        assert tf.keys() == get_transformation(ref, get_all=True).keys() == {"global"}
        for cs, t in get_transformation(ref, get_all=True).items():
            np.testing.assert_allclose(tf[cs].to_affine_matrix(*XY), t.to_affine_matrix(*XY))
    # to_anndata reads the mean (and std) as before
    adata = sd.tl.to_anndata(spots)
    assert adata.n_vars == mean.shape[0] and "std_mean" in adata.obs and adata.n_obs == int((mean.sum(0) > 0).sum())
    # a second call must not take a quantile image for the histology
    again = sd.tl.superresolve(spots, hr_um=20, progress=False, copy=True, key_added="other")
    assert again.attrs["stdiff"]["other"]["image_key"] == "he"


def test_chunks_blend_and_conserve_quantiles_like_the_std(sdata, spots):
    inp = open_input(sdata, counts_key="hr_counts", lr_um=100, factor=5, he_scale=2)
    kw = dict(out_genes=inp.genes[:3], progress=False, quantiles=(0.05, 0.95))
    whole = _LocalModel(inp.genes, 5).predict_section(inp.section(), quantiles=(0.05, 0.95))
    chunked = predict_streamed(_LocalModel(inp.genes, 5), inp, chunk_lr=3, **kw)
    mean, std = chunked  # still unpacks as (mean, std)
    assert set(chunked.quantiles) == {"q05", "q95"} and std is not None
    for name in ("q05", "q95"):  # seams blend to the whole section (the chunks agree here)
        np.testing.assert_allclose(chunked.quantiles[name].compute(), whole[name][:3], rtol=1e-6, atol=1e-6)
    # spots, conserved across seams, on the on-disk path: the quantiles take the mean's per-pixel ratio
    inp = open_input(spots, hr_um=20, factor=5, he_scale=2)
    kw["out_genes"] = inp.genes[:3]
    plain = predict_streamed(_LocalModel(inp.genes, 5), inp, chunk_lr=2, **kw)
    ref = predict_streamed(_LocalModel(inp.genes, 5), inp, chunk_lr=2, conserve_counts=True, **kw)
    disk = predict_streamed(_LocalModel(inp.genes, 5), inp, chunk_lr=2, conserve_counts=True, in_memory_mb=0, **kw)
    graph = disk.quantiles["q05"].__dask_graph__().values()
    assert any("stdiff-result-" in repr(v) for v in graph)  # read from the temporary folder
    m = disk.mean.compute()
    assert m.max() > 0 and not np.allclose(m, plain.mean.compute())
    np.testing.assert_allclose(disk.quantiles["q05"].compute(), 0.1 * m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(disk.quantiles["q95"].compute(), 1.9 * m, rtol=1e-5, atol=1e-6)
    for name in ("q05", "q95"):
        np.testing.assert_allclose(disk.quantiles[name].compute(), ref.quantiles[name].compute(), rtol=1e-6)


def test_quantiles_on_the_disk_path_read_back_and_are_replaced_only_on_purpose(spots, monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(stream, "IN_MEMORY_MB", 0)
    kw = dict(hr_um=20, progress=False)
    with caplog.at_level("INFO", logger="stdiff"):
        sd.tl.superresolve(spots, quantiles=(0.05, 0.95), chunk_lr=4, **kw)
    assert any("until it is written" in r.getMessage() for r in caplog.records)  # it took the on-disk path
    gc.collect()
    lo = _img(spots, "stdiff_q05").copy()
    spots.write(tmp_path / "a.zarr")
    back = spatialdata.read_zarr(tmp_path / "a.zarr")
    np.testing.assert_array_equal(_img(back, "stdiff_q05"), lo)
    assert written_by_stdiff(back, "stdiff_q05") and written_by_stdiff(back, "stdiff_q95")  # from sdata.attrs alone
    with monkeypatch.context() as m:
        _no_work(m)
        before = snapshot(back)
        with pytest.raises(ValueError, match=r"'stdiff'.*overwrite=True"):
            sd.tl.superresolve(back, quantiles=(0.05, 0.95), **kw)
        assert_unchanged(before, back)
    # on purpose, with other levels: the earlier levels (stdiff's, as its provenance says) go
    sd.tl.superresolve(back, quantiles=(0.25, 0.75), overwrite=True, **kw)
    assert back.attrs["stdiff"]["stdiff"]["images"] == ["stdiff", "stdiff_std", "stdiff_q25", "stdiff_q75"]
    assert "stdiff_q05" not in back.images and "stdiff_q95" not in back.images
    assert (_img(back, "stdiff_q25") <= _img(back, "stdiff_q75")).all()
    sd.tl.superresolve(back, overwrite=True, **kw)  # no quantiles this time: none stays
    assert sorted(back.images) == ["he", "stdiff", "stdiff_std"]


def test_a_users_element_named_like_a_quantile_image_is_never_replaced(spots, monkeypatch):
    from spatialdata.models import Image2DModel

    spots.images["stdiff_q95"] = Image2DModel.parse(np.ones((1, 8, 8), np.float32), dims=("c", "y", "x"))
    _no_work(monkeypatch)
    before = snapshot(spots)
    with pytest.raises(ValueError, match=r"'stdiff_q95'.*did not write.*key_added="):
        sd.tl.superresolve(spots, quantiles=(0.05, 0.95), overwrite=True, progress=False)
    assert_unchanged(before, spots)


@pytest.mark.parametrize(
    ("quantiles", "exc", "match"),
    [
        ((0.0, 0.95), ValueError, r"strictly between 0 and 1, got \[0\.0\]"),
        ((0.05, 1), ValueError, r"got \[1\]"),
        ((5, 95), ValueError, r"levels, not percents"),
        ((float("nan"),), ValueError, r"between 0 and 1"),
        ((True,), ValueError, r"between 0 and 1"),
        (("0.05",), ValueError, r"between 0 and 1"),
        (0.05, TypeError, r"pass quantiles=\(0\.05,\)"),
        ("0.05", TypeError, r"list of levels"),
        ((0.05, 0.05), ValueError, r"'<key_added>_q05'; pass each level once"),
        ((1e-10,), ValueError, r"too close to 0 or 1"),
    ],
)
def test_bad_quantiles_are_refused_before_the_work(spots, monkeypatch, quantiles, exc, match):
    _no_work(monkeypatch)
    before = snapshot(spots)
    with pytest.raises(exc, match=match):
        sd.tl.superresolve(spots, quantiles=quantiles, progress=False)
    assert_unchanged(before, spots)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(self_supervised="aggregation"), r"SelfSupervisedEnsemble gives a mean and a standard deviation but no"),
        (dict(model="tiny", n_samples=0), r"n_samples=0 draws none. Pass n_samples ≥ 2"),
    ],
)
def test_a_model_that_cannot_give_quantiles_is_refused_before_the_work(spots, tiny_model, monkeypatch, kwargs, match):
    if kwargs.get("model") == "tiny":
        kwargs = dict(kwargs, model=tiny_model, hr_um=20)
    _no_work(monkeypatch)
    before = snapshot(spots)
    with pytest.raises(ValueError, match=match):
        sd.tl.superresolve(spots, quantiles=(0.05, 0.95), progress=False, **kwargs)
    assert_unchanged(before, spots)


def test_a_default_without_a_calibrated_spread_writes_no_quantiles(spots, monkeypatch, caplog):
    import stdiff.models.spot_rate as spot_rate

    monkeypatch.setattr(spot_rate, "MIN_CALIBRATION", 10**6)
    with caplog.at_level("WARNING", logger="stdiff"):
        sd.tl.superresolve(spots, hr_um=20, quantiles=(0.05, 0.95), progress=False)
    assert sorted(spots.images) == ["he", "stdiff"] and spots.attrs["stdiff"]["stdiff"]["images"] == ["stdiff"]
    assert any("No quantile images" in r.getMessage() for r in caplog.records)


def test_a_trained_model_gives_any_level_from_its_samples(sdata, tiny_model):
    out = sd.tl.superresolve(sdata, model=tiny_model, counts_key="hr_counts", quantiles=(0.05, 0.5, 0.9), n_samples=2,
                             progress=False, copy=True)  # fmt: skip
    mean, lo, mid, hi = (_img(out, k) for k in ("stdiff", "stdiff_q05", "stdiff_q50", "stdiff_q90"))
    assert (lo <= mean + 1e-5).all() and (mean <= hi + 1e-5).all() and (hi > lo).any()
    np.testing.assert_allclose(mid, mean, rtol=1e-5, atol=1e-6)  # the predictive t is centred on the mean


def test_predictive_summary_keeps_its_90_percent_interval():
    """The t-quantile generalisation gives the 5% / 95% bounds the fixed formula gave, bit for bit."""
    from scipy.stats import t as student_t

    rng = np.random.default_rng(0)
    mu = rng.uniform(0, 2, (3, 6, 6))
    res = rng.normal(0, 0.3, (4, 3, 6, 6))
    norm = SimpleNamespace(inverse=lambda z, axis: np.expm1(z))
    out = predictive_summary(mu, res, np.ones((6, 6)), norm)
    half = student_t.ppf(0.95, df=3) * np.sqrt(1 + 1 / 4) * out["z_std"]
    np.testing.assert_array_equal(out["q05"], np.expm1(np.clip(mu - half, 0, None)))
    np.testing.assert_array_equal(out["q95"], np.expm1(np.clip(mu + half, 0, None)))
    more = predictive_summary(mu, res, np.ones((6, 6)), norm, quantiles=(0.25, 0.75))
    assert set(more) >= {"q25", "q75"} and "q05" not in more and (more["q25"] <= more["q75"]).all()
