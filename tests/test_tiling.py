"""Rasterisation and tiling: shapes, units, transforms, aggregation and bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
from spatialdata.transformations import Scale, Translation, get_transformation, set_transformation

import stdiff as sd
from stdiff.pp import Normalizer, aggregate, make_tiles, rasterize


def test_synthetic_tiles_shapes_units_and_aggregation(sdata):
    tiles = make_tiles(
        sdata, counts_key="hr_counts", image_key="he", lr_um=100, factor=5, he_scale=2, tile_lr=4, stride_lr=2
    )
    sec = tiles.sections[0]
    assert sec.hr_um == 20 and sec.he_um == 10
    # 800 µm at 100 µm/px
    assert sec.shape_lr == (8, 8)
    assert sec.hr.shape == (8, 40, 40) and sec.he.shape == (3, 80, 80)
    n = len(tiles)
    assert tiles.lr.shape == (n, 8, 4, 4)
    assert tiles.hr.shape == (n, 8, 20, 20)
    assert tiles.he.shape == (n, 3, 40, 40) and tiles.he.dtype == np.uint8
    assert tiles.mask_hr.shape == (n, 20, 20)
    # aggregating each HR tile reproduces its LR tile exactly
    np.testing.assert_array_equal(aggregate(tiles.hr, 5), tiles.lr)
    # HR truth equals the 5 µm bins summed 4×4
    bins = np.asarray(sdata["hr_counts"].data)
    np.testing.assert_array_equal(sec.hr, aggregate(bins, 4))
    # tile transform: HR pixel (0, 0) corner and pixel size in µm
    for k in range(n):
        A = tiles.transform(k).to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
        _, r, c = tiles.positions[k]
        np.testing.assert_allclose(A[:2, 2], [c * 100.0, r * 100.0])
        np.testing.assert_allclose(np.diag(A)[:2], [20.0, 20.0])


def test_histology_crop_matches_image_through_transform(sdata):
    sec = rasterize(sdata, counts_key="hr_counts", image_key="he", lr_um=100, factor=5, he_scale=4)
    he = np.asarray(sdata["he"]["scale0"].ds["image"].data)  # 1 µm/px
    # histology grid is 5 µm/px: close to the block mean of the 1 µm image (anti-aliased resampling
    # from the 2 µm pyramid level), and far from a grid shifted by one 5 µm pixel
    ref = he[:, :800, :800].reshape(3, 160, 5, 160, 5).mean(axis=(2, 4))
    got = sec.he.astype(float)
    assert np.abs(got - ref).mean() < 5.0
    r = np.corrcoef(got[2].ravel(), ref[2].ravel())[0, 1]
    shifted = np.corrcoef(got[2, :, 1:].ravel(), ref[2, :, :-1].ravel())[0, 1]
    assert r > 0.98 and r - shifted > 0.05


def test_points_source_matches_bins():
    sdata = sd.datasets.synthetic_tissue(size_um=400, n_genes=5, seed=3, transcripts=True)
    a = rasterize(sdata, counts_key="transcripts", image_key="he", lr_um=100, factor=10, he_scale=1)
    b = rasterize(sdata, counts_key="hr_counts", image_key="he", lr_um=100, factor=10, he_scale=1)
    assert a.genes == b.genes
    np.testing.assert_array_equal(a.hr, b.hr)
    np.testing.assert_array_equal(a.lr, aggregate(a.hr, 10))


def test_her2st_tiles(her2st_dir):
    s = sd.datasets.her2st("C5", data_dir=her2st_dir)
    genes = ["ERBB2", "KRT19", "CD74"]
    # inference: the spots stay measurements; legacy ST is detected, the HR pixel is 20 µm by default
    sec = rasterize(s, genes, table_key="table", he_scale=2)
    table = s.tables["table"]
    assert sec.hr is None and sec.lr_from == "spots" and len(sec.spots) == table.n_obs
    g = sec.spots.geometry
    assert g.platform == "st" and g.lattice == "square" and 180 < g.pitch_um < 200 and g.diameter_um == 100
    assert sec.hr_um == 20 and sec.lr_um >= 0.9 * g.pitch_um
    # the spot-native map: every spot's footprint holds its counts, and no tissue LR pixel is empty
    base = sd.pp.lr_per_tissue_pixel(sec)
    fp = sec.footprints()
    np.testing.assert_allclose(fp.measure(base), sec.spots.counts, rtol=1e-5)
    assert (sec.lr.sum(0)[sec.mask_lr] > 0).all() and sec.mask_lr.sum() > table.n_obs
    np.testing.assert_allclose(sec.lr.sum((1, 2)), base.sum((1, 2)), rtol=1e-5)
    # an LR grid finer than the spot pitch is refused, naming the pitch
    with pytest.raises(ValueError, match="finer than the spot pitch.*187"):
        rasterize(s, genes, table_key="table", lr_um=100, factor=5, he_scale=2)
    # evaluation: spots as HR truth (200 µm), LR = 2×2 aggregate (400 µm)
    tiles = make_tiles(s, genes, table_key="table", spots_as="hr", lr_um=400, factor=2, he_scale=8, tile_lr=4)
    sec2 = tiles.sections[0]
    assert sec2.hr_um == 200 and sec2.he_um == 25
    np.testing.assert_array_equal(aggregate(tiles.hr, 2), tiles.lr)
    assert tiles.he.shape[-1] == 4 * 2 * 8
    # the spot centres sit near HR pixel centres (the lattice is slightly skewed in the image) and
    # every spot gets its own HR pixel
    xy = np.asarray(table.obsm["spatial"])
    frac = (xy - np.asarray(sec2.origin)) / 200.0 - 0.5
    assert np.abs(frac - np.round(frac)).max() < 0.25
    assert sec2.truth_mask.sum() == table.n_obs
    # the input mask is built from the LR map and the H&E only, yet covers the measured spots
    covered = (sec2.mask_hr & sec2.truth_mask).sum() / sec2.truth_mask.sum()
    assert covered > 0.9, covered


def test_normalizer_round_trip():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(4, 30, 30)).astype(np.float32)
    norm = Normalizer.fit(counts, list("abcd"))
    z = norm.transform(counts)
    assert 0 <= z.min() and np.quantile(z, 0.5) < 1
    np.testing.assert_allclose(norm.inverse(z), counts, rtol=1e-5, atol=1e-4)
    lr = aggregate(counts, 3)
    np.testing.assert_allclose(norm.inverse(norm.transform(lr, factor=3), factor=3), lr, rtol=1e-5, atol=1e-3)
    assert Normalizer.from_dict(norm.to_dict()).subset(["c", "a"]).genes == ["c", "a"]


# ------------------------------------------------------------------ bad input


def test_unknown_coordinate_system(sdata):
    with pytest.raises(ValueError, match="coordinate_system='microns'.*global"):
        rasterize(sdata, counts_key="hr_counts", coordinate_system="microns")


def test_ambiguous_coordinate_system_requires_choice(sdata):
    set_transformation(sdata["he"], Scale([2.0, 2.0], axes=("y", "x")), to_coordinate_system="aligned")
    with pytest.raises(ValueError, match="pass coordinate_system="):
        rasterize(sdata, counts_key="hr_counts", image_key="he")


def test_image_not_covering_expression(sdata):
    t = get_transformation(sdata["he"], "global")
    from spatialdata.transformations import Sequence

    set_transformation(sdata["he"], Sequence([t, Translation([5000.0, 0.0], axes=("x", "y"))]), "global")
    with pytest.raises(ValueError, match="not registered"):
        rasterize(sdata, counts_key="hr_counts", image_key="he")


def test_image_not_covering_spots(her2st_dir):
    s = sd.datasets.her2st("C5", data_dir=her2st_dir)
    set_transformation(s["he"], Scale([0.2, 0.2], axes=("y", "x")), "global")
    with pytest.raises(ValueError, match="lies outside it"):
        rasterize(s, ["ERBB2"], table_key="table", lr_um=200, factor=2)


def test_unknown_genes(sdata):
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        rasterize(sdata, ["EPCAM", "NOT_A_GENE"], counts_key="hr_counts")


def test_negative_and_nan_counts(her2st_dir):
    s = sd.datasets.her2st("C5", data_dir=her2st_dir)
    t = s.tables["table"]
    X = t.X.toarray().astype(np.float32)
    j = list(t.var_names).index("ERBB2")
    X[0, j] = -1
    t.X = X
    with pytest.raises(ValueError, match="negative counts"):
        rasterize(s, ["ERBB2"], table_key="table", lr_um=200, factor=2)
    X[0, j] = np.nan
    t.X = X
    with pytest.raises(ValueError, match="NaN"):
        rasterize(s, ["ERBB2"], table_key="table", lr_um=200, factor=2)


def test_too_few_spots_for_a_tile(sdata):
    with pytest.raises(ValueError, match="fewer than one tile needs"):
        make_tiles(sdata, counts_key="hr_counts", lr_um=100, factor=5, he_scale=1, tile_lr=20)


def test_histology_resolution_in_um(sdata):
    sec = rasterize(sdata, counts_key="hr_counts", lr_um=100, factor=5, he_um=2.5)
    assert sec.he_scale == 8 and sec.he_um == 2.5 and sec.he.shape[-1] == 8 * 40
    with pytest.raises(ValueError, match="whole number of times"):
        rasterize(sdata, counts_key="hr_counts", lr_um=100, factor=5, he_um=3.0)


def test_bad_factor(sdata):
    with pytest.raises(ValueError, match="factor"):
        rasterize(sdata, counts_key="hr_counts", factor=2.5)
