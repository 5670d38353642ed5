"""A user's own spot section: sd.io.from_spots, the legacy ST and spots-table readers, units decided by geometry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _sdata_helpers import spot_counts

import stdiff as sd

SX, SY = 4.63, 4.16  # µm per image pixel along x and y (a hand-aligned JPEG: the axes differ)


@pytest.fixture(scope="module")
def st_truth():
    """A synthetic section measured by legacy ST spots (100 µm, square 200 µm lattice), and its H&E as RGB."""
    s = sd.datasets.synthetic_tissue(size_um=1600, n_genes=6, seed=2)
    centres, counts, genes, lattice = spot_counts(s, pitch_um=200.0, radius_um=50.0, margin_um=100.0)
    he = s.images["he"]
    level = he["scale0"].image if hasattr(he, "children") and len(he.children) else he
    rgb = np.moveaxis(np.asarray(level.values), 0, -1)  # (H, W, 3) at 1 µm / px
    return s, centres, counts, genes, lattice, rgb


def _in_pixels(rgb: np.ndarray) -> np.ndarray:
    """The 1 µm/px H&E resampled to SX × SY µm per pixel (what a scanner with other x and y steps gives)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((int(round(w / SX)), int(round(h / SY))), Image.BILINEAR))


def _reference(st_truth):
    """The section built directly in µm (the H&E element already in µm)."""
    s, centres, counts, genes, lattice, _ = st_truth
    ids = [f"{c + 1}x{r + 1}" for r, c in lattice]
    return sd.io.from_spots(counts, centres, s.images["he"], genes=genes, spot_ids=ids, units="um", platform="st")


def _maps(sdata, **kw):
    sec = sd.pp.rasterize(sdata, hr_um=40, he_scale=1, **kw)
    return sec, sd.pp.lr_per_tissue_pixel(sec)


def test_from_spots_image_orders_scales_and_errors(st_truth):
    s, centres, counts, genes, _, rgb = st_truth
    ref_sec, ref_map = _maps(_reference(st_truth))
    img = _in_pixels(rgb)
    px = np.c_[centres[:, 0] / SX, centres[:, 1] / SY]
    for image in (img, np.moveaxis(img, -1, 0)):  # (H, W, 3) and (3, H, W) give the same section
        built = sd.io.from_spots(counts, px, image, genes=genes, um_per_px=(SX, SY), platform="st")
        sec, m = _maps(built)
        assert sec.spots.geometry.platform == "st" and len(sec.spots) == len(ref_sec.spots)
        np.testing.assert_allclose(sec.spots.xy, ref_sec.spots.xy, atol=1e-6)
        np.testing.assert_array_equal(sec.spots.counts, ref_sec.spots.counts)
        assert sec.origin == ref_sec.origin and m.shape == ref_map.shape
        # the same maps up to the resampled image's tissue mask
        assert (sec.mask_hr == ref_sec.mask_hr).mean() > 0.95
        assert np.corrcoef(m.ravel(), ref_map.ravel())[0, 1] > 0.95
    affine = np.array([[SX, 0.0, 0.0], [0.0, SY, 0.0]])
    by_affine = sd.io.from_spots(counts, px, img, genes=genes, affine=affine, platform="st")
    np.testing.assert_allclose(by_affine["table"].obsm["spatial"], centres, atol=1e-6)
    with pytest.raises(ValueError, match=r"channel axis .* expected \(H, W, 3\) or \(3, H, W\)"):
        sd.io.from_spots(counts, px, np.zeros((3, 10, 3), np.uint8), genes=genes, um_per_px=1.0, platform="st")
    with pytest.raises(ValueError, match="nothing says how large a pixel is: pass um_per_px="):
        sd.io.from_spots(counts, px, img, genes=genes)
    with pytest.raises(ValueError, match="pass genes="):
        sd.io.from_spots(counts, px, img, um_per_px=1.0)


@pytest.mark.parametrize("scale", [(1.0, 1.0), (SX, SY)], ids=["native", "anisotropic"])
def test_read_st_matches_the_section_built_in_um(st_truth, tmp_path, scale):
    from PIL import Image

    s, centres, counts, genes, lattice, rgb = st_truth
    sx, sy = scale
    img = rgb if scale == (1.0, 1.0) else _in_pixels(rgb)
    Image.fromarray(img).save(tmp_path / "HE.png")
    ax, ay = lattice[:, 1] + 1, lattice[:, 0] + 1  # ST array positions start at 1
    keys = [f"{x}x{y}" for x, y in zip(ax, ay)]
    pd.DataFrame(counts, index=keys, columns=genes).to_csv(tmp_path / "counts.tsv.gz", sep="\t")
    detector = pd.DataFrame({
        "x": ax, "y": ay, "new_x": ax + 0.01, "new_y": ay - 0.01,
        "pixel_x": centres[:, 0] / sx, "pixel_y": centres[:, 1] / sy, "selected": 1,
    })  # fmt: skip
    detector.loc[0, "selected"] = 0  # a spot off tissue: dropped
    detector.to_csv(tmp_path / "spot_data-selection.tsv", sep="\t", index=False)
    st = sd.io.read_st(tmp_path / "counts.tsv.gz", tmp_path / "spot_data-selection.tsv", tmp_path / "HE.png")
    how = st.attrs["stdiff_section"]
    assert how["rms_px"] < 1e-6 and "alignment" in how["scale"]
    t = st["table"]
    assert t.n_obs == len(keys) - 1 and list(t.obs_names) == keys[1:] and list(t.var_names) == genes
    np.testing.assert_allclose(t.obsm["spatial"], centres[1:], atol=1e-6)
    sec, m = _maps(st)
    ref = _reference(st_truth)
    ref_sec, ref_map = _maps(ref)
    assert sec.spots.geometry.platform == "st" and sec.spots.geometry.pitch_um == pytest.approx(200)
    np.testing.assert_array_equal(sec.spots.counts, ref_sec.spots.counts[:, 1:])
    if scale == (1.0, 1.0):  # the same image, the same spots: the same maps as the section built in µm
        keep = np.ones(len(keys), bool)
        keep[0] = False
        direct = sd.io.from_spots(counts[keep], centres[keep], s.images["he"], genes=genes, units="um", platform="st")
        full = {"hr_um": 40, "he_scale": 40}  # the image at its own 1 µm pixels (no pyramid level in between)
        a, b = sd.pp.rasterize(st, **full), sd.pp.rasterize(direct, **full)
        assert (a.he != b.he).mean() < 0.002  # the image's outermost pixel column/row may round either way
        np.testing.assert_allclose(sd.pp.lr_per_tissue_pixel(a), sd.pp.lr_per_tissue_pixel(b), rtol=1e-5, atol=1e-5)
    # transposed counts (genes × spots) read the same
    pd.DataFrame(counts.T, index=genes, columns=keys).to_csv(tmp_path / "counts_t.tsv", sep="\t")
    st2 = sd.io.read_st(tmp_path / "counts_t.tsv", tmp_path / "spot_data-selection.tsv", tmp_path / "HE.png")
    np.testing.assert_array_equal(st2["table"].X.toarray(), t.X.toarray())
    with pytest.raises(ValueError, match=r"named '\{x\}x\{y\}'"):
        pd.DataFrame(counts, index=[f"spot{i}" for i in range(len(keys))], columns=genes).to_csv(
            tmp_path / "bad.tsv", sep="\t"
        )
        sd.io.read_st(tmp_path / "bad.tsv", tmp_path / "spot_data-selection.tsv", tmp_path / "HE.png")


def test_read_spots_table(st_truth, tmp_path):
    from PIL import Image

    s, centres, counts, genes, _, rgb = st_truth
    img = _in_pixels(rgb)
    Image.fromarray(img).save(tmp_path / "he.png")
    barcodes = [f"AAAC{i:04d}-1" for i in range(len(centres))]
    pd.DataFrame({"barcode": barcodes[::-1], "x": centres[::-1, 0] / SX, "y": centres[::-1, 1] / SY}).to_parquet(
        tmp_path / "spots.parquet"
    )
    pd.DataFrame(counts, index=barcodes, columns=genes).to_csv(tmp_path / "counts.csv")
    sdata = sd.io.read_spots_table(tmp_path / "spots.parquet", tmp_path / "counts.csv", tmp_path / "he.png",
                                   um_per_px=(SX, SY), platform="st")  # fmt: skip
    t = sdata["table"]
    assert list(t.obs_names) == barcodes[::-1]  # the positions' order
    np.testing.assert_allclose(t.obsm["spatial"], centres[::-1], atol=1e-6)
    np.testing.assert_array_equal(t.X.toarray(), counts[::-1])
    with pytest.raises(KeyError, match="lacks columns"):
        sd.io.read_spots_table(pd.DataFrame({"id": barcodes}), tmp_path / "counts.csv", img, um_per_px=1.0)


def test_units_decided_by_geometry(st_truth):
    from spatialdata.transformations import Affine, Scale, get_transformation, set_transformation

    ref = _reference(st_truth)
    # a hand alignment 3% off 200 µm is still µm
    set_transformation(ref.shapes["spots"], Scale([1.0185, 1.0185], axes=("x", "y")), "global")
    assert sd.pp.rasterize(ref, hr_um=40, he_scale=1).spots.geometry.platform == "st"
    # legacy ST left in image pixels (x 4.63, y 4.16 µm/px) is caught, naming the scale
    to_px = Affine(np.array([[1 / SX, 0, 0], [0, 1 / SY, 0], [0, 0, 1]]), input_axes=("x", "y"), output_axes=("x", "y"))
    set_transformation(ref.shapes["spots"], to_px, "global")
    he_t = get_transformation(ref.images["he"], "global")
    from spatialdata.transformations import Sequence

    set_transformation(ref.images["he"], Sequence([he_t, to_px]), "global")
    with pytest.raises(ValueError, match=r"proportions of legacy ST spots .*about 4\.\d+ µm .*affine="):
        sd.pp.rasterize(ref, hr_um=40, he_scale=1)
    # the lattice gives the full affine back (different x and y scales)
    sd.pp.to_micrometres(ref, "global")
    info = ref.attrs["stdiff_micrometres"]["global_um"]
    np.testing.assert_allclose(np.asarray(info["affine"])[:2, :2], np.diag([SX, SY]), rtol=1e-6, atol=1e-9)
    sec = sd.pp.rasterize(ref, hr_um=40, he_scale=1, coordinate_system="global_um")
    assert sec.spots.geometry.platform == "st" and sec.spots.geometry.pitch_um == pytest.approx(200)
    # or given by hand: (x, y) scales, or an affine
    sd.pp.to_micrometres(ref, "global", um_per_unit=(SX, SY), key_added="by_hand")
    sd.pp.to_micrometres(ref, "global", affine=[[SX, 0, 0], [0, SY, 0]], key_added="by_affine")
    for cs in ("by_hand", "by_affine"):
        s2 = sd.pp.rasterize(ref, hr_um=40, he_scale=1, coordinate_system=cs)
        np.testing.assert_allclose(s2.spots.xy, sec.spots.xy, atol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        sd.pp.to_micrometres(ref, "global", um_per_unit=1.0, affine=np.eye(3), key_added="x")


def test_a_new_users_mistakes_name_the_fix_and_leave_the_section_unchanged(st_truth):
    """A first section's three mistakes, via superresolve: each error names the fix, nothing is written."""
    import spatialdata
    from _sdata_helpers import assert_unchanged, snapshot
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Affine, Sequence, get_transformation, set_transformation

    s, centres, counts, genes, lattice, rgb = st_truth
    # genes asked by symbol on a table indexed by Ensembl ids
    by_id = _reference(st_truth)
    t = by_id.tables["table"]
    t.var["symbol"] = list(t.var_names)
    t.var_names = [f"ENSG{i:011d}" for i in range(t.n_vars)]
    # an (H, W, 3) picture parsed as (c, y, x)
    hwc = _reference(st_truth)
    tf = get_transformation(hwc.images["he"], "global")
    hwc.images["he"] = Image2DModel.parse(rgb, dims=("c", "y", "x"), transformations={"global": tf})
    # legacy ST left in image pixels (x 4.63, y 4.16 µm/px)
    in_px = _reference(st_truth)
    to_px = Affine(np.array([[1 / SX, 0, 0], [0, 1 / SY, 0], [0, 0, 1]]), input_axes=("x", "y"), output_axes=("x", "y"))
    set_transformation(in_px.shapes["spots"], to_px, "global")
    he_tf = get_transformation(in_px.images["he"], "global")
    set_transformation(in_px.images["he"], Sequence([he_tf, to_px]), "global")
    assert get_transformation(s.images["he"], "global") == he_tf  # the sections built from it have their own
    cases = [
        (by_id, [genes[0]], KeyError, r"look like Ensembl ids.*gene_symbols='symbol'"),
        (hwc, genes[:2], ValueError, r"looks like an \(H, W, 3\) picture.*dims=\('y', 'x', 'c'\)"),
        (in_px, genes[:2], ValueError, r"proportions of legacy ST spots .*to_micrometres"),
    ]
    for sdata, gs, exc, match in cases:
        before = snapshot(sdata)
        with pytest.raises(exc, match=match):
            sd.tl.superresolve(sdata, gs, hr_um=40, progress=False)
        assert_unchanged(before, sdata)
        assert "stdiff" not in sdata.images
    # each named fix works
    fixed = spatialdata.deepcopy(by_id)
    sd.tl.superresolve(fixed, [genes[0]], hr_um=40, gene_symbols="symbol", progress=False)
    assert list(sd.tl.to_anndata(fixed, "stdiff").var_names) == [genes[0]]
