"""Sections as spatialdata-io reads them (pixel systems) give the same maps as the same data in µm."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _io_formats import assert_same_section, hex_spots, spots_in_um, write_visium, write_xenium
from _sdata_helpers import assert_unchanged, snapshot

import stdiff as sd
from stdiff.pp import rasterize

spatialdata_io = pytest.importorskip("spatialdata_io")

GRID = dict(lr_um=100, factor=5, he_scale=2)
HE_UM = 0.5


@pytest.fixture(scope="module")
def source():
    """An 800 µm synthetic section (same genes as the tiny model's) with an H&E of 0.5 µm per pixel."""
    return sd.datasets.synthetic_tissue(size_um=800, n_genes=8, seed=1, he_um=HE_UM, transcripts=True)


def _he_rgb(source) -> np.ndarray:
    el = source.images["he"]
    return np.asarray(el["scale0"].ds["image"].data).transpose(1, 2, 0)


def _he_element(rgb: np.ndarray, transform, cs: str = "global"):
    """The H&E as a µm SpatialData would hold it (same pyramid as spatialdata-io builds)."""
    from spatialdata.models import Image2DModel

    return Image2DModel.parse(
        rgb.transpose(2, 0, 1),
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        transformations={cs: transform},
        scale_factors=[2, 2, 2, 2],
    )


def _img(sdata, key):
    el = sdata.images[key]
    arr = el["scale0"].ds["image"].data if hasattr(el, "children") and len(el.children) else el.data
    return np.asarray(arr)


def test_visium_folder_read_by_spatialdata_io(tmp_path, source, tiny_model):
    from spatialdata.transformations import Scale

    spots, counts, genes = hex_spots(source)
    rgb = _he_rgb(source)
    direct = spots_in_um(_he_element(rgb, Scale([HE_UM, HE_UM], axes=("x", "y"))), spots, counts, genes)
    folder = write_visium(tmp_path / "outs", rgb, spots, counts, genes, um_per_px=HE_UM)
    read = spatialdata_io.visium(folder, dataset_id="sectionA", fullres_image_file="fullres.tif")
    assert "sectionA" in read.coordinate_systems and read.shapes["sectionA"]["radius"].iloc[0] == pytest.approx(65.0)

    # the reader's full-resolution pixel system is refused, naming the fix; nothing is changed
    before = snapshot(read)
    for call in (
        lambda: rasterize(read, coordinate_system="sectionA", **GRID),
        lambda: sd.tl.superresolve(read, model=tiny_model, coordinate_system="sectionA", progress=False),
    ):
        with pytest.raises(ValueError, match=r"not in micrometres.*to_micrometres\(sdata, 'sectionA'\)"):
            call()
        assert_unchanged(before, read)

    # a new µm system; the others are left alone
    assert sd.pp.to_micrometres(read) is None
    info = read.attrs["stdiff_micrometres"]["sectionA_um"]
    assert info["source"] == "sectionA" and info["um_per_unit"] == pytest.approx(HE_UM, rel=1e-9)
    assert "lattice" in info["how"]
    after = snapshot(read)
    for name, tfs in before["transformations"].items():
        for cs, m in tfs.items():
            np.testing.assert_allclose(after["transformations"][name][cs], m)

    # spots land on their µm positions; the same maps as the data given in µm
    a = rasterize(direct, **GRID)
    b = rasterize(read, **GRID)  # the µm system is picked by default
    assert b.coordinate_system == "sectionA_um" and b.image_key == "sectionA_full_image"
    assert_same_section(a, b)
    centres_px = read.shapes["sectionA"].geometry
    np.testing.assert_allclose(centres_px.x.to_numpy() * info["um_per_unit"], spots["x"].to_numpy(), atol=1e-6)

    # and the same super-resolved maps
    out_a = sd.tl.superresolve(direct, model=tiny_model, progress=False, copy=True)
    out_b = sd.tl.superresolve(read, model=tiny_model, progress=False, copy=True)
    np.testing.assert_allclose(_img(out_b, "stdiff"), _img(out_a, "stdiff"), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_img(out_b, "stdiff_std"), _img(out_a, "stdiff_std"), rtol=1e-4, atol=1e-4)
    assert "stdiff" not in read.images  # copy=True


def test_visium_without_lattice_uses_spot_diameter(tmp_path, source):
    spots, counts, genes = hex_spots(source)
    folder = write_visium(tmp_path / "outs", _he_rgb(source), spots, counts, genes, um_per_px=HE_UM)
    read = spatialdata_io.visium(folder, dataset_id="s")
    read.tables["table"].obs = read.tables["table"].obs.drop(columns=["array_row", "array_col"])
    out = sd.pp.to_micrometres(read, "s", copy=True)
    assert "s_um" not in read.coordinate_systems and "s_um" in out.coordinate_systems
    info = out.attrs["stdiff_micrometres"]["s_um"]
    assert info["um_per_unit"] == pytest.approx(HE_UM) and "65 µm" in info["how"]
    # the hires image is used when there is no full-resolution one
    sec = rasterize(out, **GRID)
    assert sec.image_key == "s_hires_image" and sec.lr.sum() > 0


def test_units_that_cannot_be_found(source):
    from spatialdata.transformations import Identity

    spots, counts, genes = hex_spots(source)
    s = spots_in_um(source.images["he"], spots, counts, genes)
    with pytest.raises(ValueError, match=r"um_per_unit=0\.5"):
        sd.pp.to_micrometres(s, "global")
    # spots in pixels without any reader metadata: detected from their size and refused
    from spatialdata.transformations import Scale, set_transformation

    set_transformation(s.shapes["spots"], Scale([4.0, 4.0], axes=("x", "y")), "global")
    set_transformation(s.images["he"], Scale([2.0, 2.0], axes=("x", "y")), "global")
    with pytest.raises(ValueError, match=r"proportions of Visium spots .* at 4× their size.*about 0\.25 µm"):
        rasterize(s, **GRID)
    sd.pp.to_micrometres(s, "global", um_per_unit=0.25)
    assert rasterize(s, coordinate_system="global_um", **GRID).lr.sum() > 0
    set_transformation(s.shapes["spots"], Identity(), "global")  # keeps running on the original


def test_xenium_folder_read_by_spatialdata_io(tmp_path, source, tiny_model):
    from spatialdata import SpatialData
    from spatialdata.models import PointsModel
    from spatialdata.transformations import Affine, Identity

    tx = source.points["transcripts"].compute()
    rgb = _he_rgb(source)
    offset = (30.0, 45.0)
    folder = write_xenium(tmp_path / "xenium", tx[["x", "y", "gene"]], rgb, he_um=HE_UM, offset_um=offset)
    read = spatialdata_io.xenium(
        folder,
        cells_boundaries=False,
        nucleus_boundaries=False,
        cells_labels=False,
        nucleus_labels=False,
        cells_table=False,
        morphology_mip=False,
    )
    assert set(read.coordinate_systems) == {"global"}

    before = snapshot(read)
    with pytest.raises(ValueError, match="spatialdata_io.xenium, in morphology-image pixels"):
        rasterize(read, **GRID)
    assert_unchanged(before, read)
    sd.pp.to_micrometres(read)
    assert read.attrs["stdiff_micrometres"]["global_um"]["um_per_unit"] == pytest.approx(0.2125)

    # the same data given in µm: transcripts as the reader stores them, the H&E through its alignment
    frame = pd.DataFrame(
        {
            "x": tx["x"].to_numpy(np.float32) + np.float32(offset[0]),
            "y": tx["y"].to_numpy(np.float32) + np.float32(offset[1]),
            "gene": pd.Categorical(tx["gene"].astype(str)),
        }
    )
    A = np.array([[HE_UM, 0, offset[0]], [0, HE_UM, offset[1]], [0, 0, 1]])
    direct = SpatialData(
        images={"he": _he_element(rgb, Affine(A, input_axes=("x", "y"), output_axes=("x", "y")))},
        points={
            "transcripts": PointsModel.parse(
                frame, coordinates={"x": "x", "y": "y"}, feature_key="gene", transformations={"global": Identity()}
            )
        },
    )
    genes = sorted(tx["gene"].astype(str).unique())
    a = rasterize(direct, genes, **GRID)
    b = rasterize(read, genes, **GRID)
    assert b.coordinate_system == "global_um" and b.image_key == "he_image" and b.source == "points"
    assert_same_section(a, b, exact_hr=True)

    out_a = sd.tl.superresolve(direct, model=tiny_model, progress=False, copy=True)
    out_b = sd.tl.superresolve(read, model=tiny_model, progress=False, copy=True)
    np.testing.assert_allclose(_img(out_b, "stdiff"), _img(out_a, "stdiff"), rtol=1e-4, atol=1e-4)


def test_visium_hd_bins_give_the_pixel_size():
    """As spatialdata_io.visium_hd lays it out: squares of the bin size (in pixels), one table per bin size."""
    import anndata as ad
    import geopandas as gpd
    import scipy.sparse as sp
    from shapely.geometry import box
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    um_per_px, bin_um = 0.2738, 8.0
    side = bin_um / um_per_px
    rows, cols = np.meshgrid(np.arange(6), np.arange(5), indexing="ij")
    x, y = (cols.ravel() + 0.5) * side + 1000, (rows.ravel() + 0.5) * side + 2000
    squares = gpd.GeoDataFrame(
        geometry=[box(a - side / 2, b - side / 2, a + side / 2, b + side / 2) for a, b in zip(x, y, strict=True)]
    )
    tf = {"hd": Identity(), "hd_downscaled_hires": Scale([0.1, 0.1], axes=("x", "y"))}
    shapes = ShapesModel.parse(squares, transformations=tf)
    obs = pd.DataFrame(
        {
            "array_row": rows.ravel(),
            "array_col": cols.ravel(),
            "region": "hd_square_008um",
            "location_id": np.arange(30),
        }
    )
    obs["region"] = obs["region"].astype("category")
    table = TableModel.parse(
        ad.AnnData(sp.csr_matrix(np.ones((30, 2), np.float32)), obs=obs),
        region="hd_square_008um",
        region_key="region",
        instance_key="location_id",
    )
    s = SpatialData(shapes={"hd_square_008um": shapes}, tables={"square_008um": table})
    s.attrs["spatialdata_io_reader"] = "visium_hd"
    sd.pp.to_micrometres(s)  # the full-resolution system, not the downscaled one
    info = s.attrs["stdiff_micrometres"]["hd_um"]
    assert info["um_per_unit"] == pytest.approx(um_per_px) and "8 µm" in info["how"]
