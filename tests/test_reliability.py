"""Nothing lost, nothing silent: the result outlives its call, the user's elements are never replaced,
and every bad input is refused before the work, with a message naming what was passed and the fix,
leaving the SpatialData unchanged.

The inputs building a section (``from_spots``, the readers) are in ``test_reliability_io.py``.
"""

from __future__ import annotations

import gc
import glob
import os

import numpy as np
import pytest
import spatialdata
from _sdata_helpers import assert_unchanged, snapshot, spots_section

import stdiff as sd
import stdiff.tl._stream as stream
from stdiff.pp._input import open_input
from stdiff.tl._stream import predict_streamed
from stdiff.tl._write import written_by_stdiff


@pytest.fixture
def spots(synthetic_small):
    return spots_section(synthetic_small)


class _NoWork:
    """Fails the test if a prediction or a fit starts (the error must come before the work)."""

    def __init__(self, monkeypatch):
        import stdiff.tl._superresolve as srmod

        def boom(*a, **k):
            raise AssertionError("the work started before the input was refused")

        monkeypatch.setattr(srmod, "predict_streamed", boom)
        monkeypatch.setattr(srmod, "_learn", boom)


def _img(sdata, key):
    el = sdata.images[key]
    return np.asarray(el["scale0"].image.data if hasattr(el, "children") and len(el.children) else el.data)


# --------------------------------------------------------------------------- a result that outlives its call


class _LocalModel:
    """Each HR pixel gets its LR pixel's counts / f² on tissue (a stand-in for a model; see test_stream)."""

    def __init__(self, genes, factor):
        from types import SimpleNamespace

        self.genes, self.factor = list(genes), factor
        self.config = SimpleNamespace(tile_lr=4, sampler=SimpleNamespace(n_samples=2))

    def predict_section(self, section, *, seed=0, progress=False, **kwargs):
        f = self.factor
        up = np.kron(section.lr / f**2, np.ones((f, f), np.float32)) * section.mask_hr
        return {"mean": up.astype(np.float32), "std": (0.1 * up + section.mask_hr).astype(np.float32)}


def test_a_conserved_result_on_disk_outlives_the_call_and_its_folder_goes_with_it(spots):
    inp = open_input(spots, hr_um=20, factor=5, he_scale=2)
    kw = dict(out_genes=inp.genes[:3], chunk_lr=2, conserve_counts=True, progress=False)
    ref_mean, ref_std = (a.compute() for a in predict_streamed(_LocalModel(inp.genes, 5), inp, **kw))
    before = set(glob.glob(os.path.join(os.path.dirname(stream.tempfile.mkdtemp()), "stdiff-result-*")))
    mean, std = predict_streamed(_LocalModel(inp.genes, 5), inp, in_memory_mb=0, **kw)
    gc.collect()
    folders = set(glob.glob(os.path.join(os.path.dirname(stream.tempfile.mkdtemp()), "stdiff-result-*"))) - before
    assert len(folders) == 1  # the on-disk path was taken
    assert ref_mean.max() > 0
    np.testing.assert_allclose(mean.compute(), ref_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std.compute(), ref_std, rtol=1e-6, atol=1e-6)
    # a pyramid level computed from the mean alone keeps the folder too
    coarse = mean[:, ::2, ::2]
    del mean, std
    gc.collect()
    assert os.path.isdir(next(iter(folders)))
    np.testing.assert_allclose(coarse.compute(), ref_mean[:, ::2, ::2], rtol=1e-6, atol=1e-6)
    del coarse
    gc.collect()
    assert not os.path.isdir(next(iter(folders)))  # removed once nothing reads it


def test_superresolve_conserved_on_disk_reads_back_after_the_call(spots, tiny_model, monkeypatch, tmp_path, caplog):
    # the mean only (no sampling: fast); the stand-in model above checks the std alike
    kw = dict(model=tiny_model, hr_um=20, conserve_counts=True, chunk_lr=4, n_samples=0, progress=False)
    ref = sd.tl.superresolve(spots, copy=True, **kw)
    monkeypatch.setattr(stream, "IN_MEMORY_MB", 0)
    with caplog.at_level("INFO", logger="stdiff"):
        sd.tl.superresolve(spots, **kw)
    assert any("until it is written" in r.getMessage() for r in caplog.records)  # it took the on-disk path
    assert not any("%%" in r.getMessage() for r in caplog.records)
    gc.collect()
    mean = _img(spots, "stdiff")
    assert mean.max() > 0
    np.testing.assert_allclose(mean, _img(ref, "stdiff"), rtol=1e-5, atol=1e-6)
    spots.write(tmp_path / "out.zarr")
    back = spatialdata.read_zarr(tmp_path / "out.zarr")
    np.testing.assert_allclose(_img(back, "stdiff"), mean, rtol=1e-6)


# ------------------------------------------------------------------------- names that belong to the user


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("he", r"image 'he'.*did not write.*key_added='he_stdiff'"),
        ("spots", r"shape element 'spots'.*did not write"),
        ("table", r"table element 'table'.*did not write"),
        ("HE", r"element 'he'.*did not write"),
        ("my key", r"key_added='my key' cannot name"),
        ("__x", r"cannot name"),
        ("", r"non-empty string"),
    ],
)
def test_key_added_never_replaces_the_users_elements(spots, monkeypatch, key, match):
    _NoWork(monkeypatch)
    before = snapshot(spots)
    he = _img(spots, "he").copy()
    with pytest.raises(ValueError, match=match):
        sd.tl.superresolve(spots, key_added=key, overwrite=True, progress=False)
    assert_unchanged(before, spots)
    np.testing.assert_array_equal(_img(spots, "he"), he)


def test_a_users_std_named_like_ours_is_never_removed(spots, monkeypatch):
    from spatialdata.models import Image2DModel

    spots.images["overlay_std"] = Image2DModel.parse(np.ones((1, 8, 8), np.float32), dims=("c", "y", "x"))
    _NoWork(monkeypatch)
    before = snapshot(spots)
    with pytest.raises(ValueError, match=r"'overlay_std'.*did not write"):
        sd.tl.superresolve(spots, key_added="overlay", n_samples=0, progress=False)
    assert_unchanged(before, spots)
    assert not written_by_stdiff(spots, "overlay_std")


def test_an_earlier_result_is_replaced_only_on_purpose(spots, tiny_model, monkeypatch, tmp_path):
    kw = dict(model=tiny_model, hr_um=20, progress=False)
    sd.tl.superresolve(spots, seed=1, n_samples=2, **kw)
    first = _img(spots, "stdiff_std").copy()
    assert sd.tl.superresolve(spots, seed=2, n_samples=0, copy=True, **kw) is not None  # a copy may replace its own
    with monkeypatch.context() as m:
        _NoWork(m)
        before = snapshot(spots)
        with pytest.raises(ValueError, match=r"overwrite=True.*key_added='stdiff_stdiff'"):
            sd.tl.superresolve(spots, seed=2, **kw)
        assert_unchanged(before, spots)
    np.testing.assert_array_equal(_img(spots, "stdiff_std"), first)
    assert spots.attrs["stdiff"]["stdiff"]["images"] == ["stdiff", "stdiff_std"]
    # on purpose, and without samples this time: the earlier std (stdiff's, as its provenance says) goes
    spots.write(tmp_path / "a.zarr")
    back = spatialdata.read_zarr(tmp_path / "a.zarr")
    assert written_by_stdiff(back, "stdiff") and written_by_stdiff(back, "stdiff_std")  # from sdata.attrs alone
    sd.tl.superresolve(back, n_samples=0, overwrite=True, **kw)
    assert "stdiff_std" not in back.images and back.attrs["stdiff"]["stdiff"]["images"] == ["stdiff"]
    assert back.attrs["stdiff"]["stdiff"]["n_samples"] == 0


# ------------------------------------------------------------------------ arguments checked before the work


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(chunk_lr=0), ValueError, r"chunk_lr must be a whole number ≥ 1, got 0"),
        (dict(chunk_lr=2.5), ValueError, r"chunk_lr .* got 2\.5"),
        (dict(n_samples=-1), ValueError, r"n_samples .* got -1"),
        (dict(n_samples=1), ValueError, r"n_samples=1.*n_samples=0 for the mean only"),
        (dict(num_inference_steps=0), ValueError, r"num_inference_steps"),
        (dict(train_steps=-5), ValueError, r"train_steps"),
        (dict(factor=0), ValueError, r"factor .* got 0"),
        (dict(hr_um=-10), ValueError, r"hr_um must be a positive number of µm, got -10"),
        (dict(lr_um=float("nan")), ValueError, r"lr_um"),
        (dict(scale_factors=[0]), ValueError, r"scale_factors"),
        (dict(scale_factors="2"), ValueError, r"scale_factors"),
        (dict(seed=-1), ValueError, r"seed"),
        (dict(self_supervised="nope"), ValueError, r"self_supervised must be"),
        (dict(genes=[]), ValueError, r"genes=\[\] names no gene"),
        (dict(genes="g0"), TypeError, r"pass genes=\['g0'\]"),
        (dict(genes=["a", "b", "a"]), ValueError, r"\['a'\] more than once"),
    ],
)
def test_arguments_are_refused_before_the_work(spots, monkeypatch, kwargs, exc, match):
    _NoWork(monkeypatch)
    before = snapshot(spots)
    with pytest.raises(exc, match=match):
        sd.tl.superresolve(spots, progress=False, **kwargs)
    assert_unchanged(before, spots)


def test_n_samples_zero_writes_no_std(spots, tiny_model):
    out = sd.tl.superresolve(spots, model=tiny_model, hr_um=20, n_samples=0, progress=False, copy=True)
    assert "stdiff_std" not in out.images and _img(out, "stdiff").max() > 0


def test_a_spot_model_on_other_spots_is_refused_for_its_platform(synthetic_small, tiny_model, monkeypatch):
    import copy

    st = spots_section(synthetic_small, pitch_um=200.0, radius_um=50.0)
    model = copy.copy(tiny_model)
    model.platform = "visium"  # as if trained with platform="visium"
    _NoWork(monkeypatch)
    before = snapshot(st)
    with pytest.raises(ValueError, match=r"trained for 'visium' spots.*look like 'st'") as err:
        sd.tl.superresolve(st, model=model, progress=False)
    assert "lr_um" not in str(err.value)  # the user gave none
    assert_unchanged(before, st)


# ---------------------------------------------------------------------------- the section's own data


def _replace_table(sdata, adata):
    from spatialdata.models import TableModel

    adata.uns.pop("spatialdata_attrs", None)
    del sdata.tables["table"]
    sdata.tables["table"] = TableModel.parse(adata, region="spots", region_key="region", instance_key="spot_id")


def _move_spots(sdata, fn):
    import geopandas as gpd

    shapes = sdata.shapes["spots"]
    xy = fn(np.c_[shapes.geometry.x, shapes.geometry.y])
    shapes.geometry = gpd.GeoSeries(gpd.points_from_xy(xy[:, 0], xy[:, 1]), index=shapes.index)


def _one_spot(s):
    _replace_table(s, s.tables["table"][:1].copy())


def _nan_spot(s):
    _move_spots(s, lambda xy: np.where(np.arange(len(xy))[:, None] == 3, np.nan, xy))


def _one_point(s):
    _move_spots(s, lambda xy: xy * 0 + 400.0)


def _far_spot(s):
    _move_spots(s, lambda xy: np.where(np.arange(len(xy))[:, None] == 0, [[5800.0, 400.0]], xy))


def _not_in_shapes(s):
    s.tables["table"].obs["spot_id"] = [f"x{i}" for i in range(s.tables["table"].n_obs)]


def _repeated_gene(s):
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sparse

    t = s.tables["table"]
    X = sparse.hstack([t.X, t.X[:, :1] * 2]).tocsr()
    _replace_table(s, ad.AnnData(X=X, obs=t.obs.copy(), var=pd.DataFrame(index=[*t.var_names, t.var_names[0]])))


def _nan_image(s):
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    tf = get_transformation(s.images["he"], get_all=True)
    img = np.full((3, 200, 200), np.nan, np.float32)
    s.images["he"] = Image2DModel.parse(img, dims=("c", "y", "x"), transformations=tf, scale_factors=[2])


@pytest.mark.parametrize(
    ("edit", "kwargs", "match"),
    [
        (_one_spot, {}, r"has 1 spot.*at least 2"),
        (_nan_spot, {}, r"no finite centre.*'spot3'"),
        (_one_point, {}, r"All 64 spots of table 'table' share a centre"),
        (_far_spot, {}, r"1 of 64 spots .* far outside image 'he'.*'spot0' at \(5800, 400\)"),
        (_not_in_shapes, {}, r"not in shapes 'spots'"),
        (_repeated_gene, {"genes": None}, r"name several columns.*var_names_make_unique"),
        (_nan_image, {}, r"Image 'he' has NaN or infinite pixels"),
    ],
)
def test_bad_sections_are_refused_before_the_work(spots, monkeypatch, edit, kwargs, match):
    edit(spots)
    _NoWork(monkeypatch)
    before = snapshot(spots)
    with pytest.raises(ValueError, match=match):
        sd.tl.superresolve(spots, hr_um=20, progress=False, **kwargs)
    assert_unchanged(before, spots)


def test_a_section_built_by_from_spots_is_pointed_at_its_own_scale(synthetic_small, monkeypatch):
    from spatialdata.transformations import Scale, set_transformation

    s = spots_section(synthetic_small)
    for el in (s.shapes["spots"], s.images["he"]):  # both scaled as if the µm were 0.85 of what they are
        set_transformation(el, Scale([0.85, 0.85], axes=("x", "y")), "global")
    _NoWork(monkeypatch)
    with pytest.raises(ValueError, match=r"built by stdiff\.io\.from_spots: check its positions' units=") as err:
        sd.tl.superresolve(s, progress=False)
    assert "or build the section with stdiff.io.from_spots" not in str(err.value)


def test_the_troubleshooting_page_quotes_messages_stdiff_raises():
    """Each heading of docs/troubleshooting.md is the start of a message in the code (``…`` for its variable parts)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    source = "\n".join(p.read_text() for p in (root / "src" / "stdiff").rglob("*.py"))
    page = (root / "docs" / "troubleshooting.md").read_text()
    headings = [line[4:] for line in page.splitlines() if line.startswith("### ")]
    assert len(headings) >= 15
    missing = [
        piece
        for heading in headings
        for message in heading.split(" / ")
        for piece in (p.strip(" ,.") for p in message.split("…"))
        if len(piece) >= 6 and piece not in source
    ]
    assert not missing, f"quoted on the troubleshooting page but raised nowhere: {missing}"
    assert "troubleshooting" in (root / "docs" / "index.md").read_text()
    assert "{doc}`troubleshooting`" in (root / "docs" / "installation.md").read_text()


def test_a_result_written_before_the_images_record_is_still_stdiffs(spots, tiny_model, tmp_path):
    """A store written before provenance listed its images: its mean, and a std with its genes, are stdiff's."""
    sd.tl.superresolve(spots, model=tiny_model, hr_um=20, n_samples=2, progress=False)
    del spots.attrs["stdiff"]["stdiff"]["images"]
    spots.write(tmp_path / "old.zarr")
    old = spatialdata.read_zarr(tmp_path / "old.zarr")
    assert written_by_stdiff(old, "stdiff") and written_by_stdiff(old, "stdiff_std")
    from spatialdata.models import Image2DModel

    old.images["stdiff_std"] = Image2DModel.parse(np.ones((1, 8, 8), np.float32), dims=("c", "y", "x"))
    assert not written_by_stdiff(old, "stdiff_std")  # another image under that name: not ours
