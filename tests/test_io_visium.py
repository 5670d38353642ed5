"""``sd.io.read_visium``: Space Ranger outs/ folders as they are on disk give the section built directly in µm."""

from __future__ import annotations

import numpy as np
import pytest
from _io_formats import assert_same_section, hex_spots, spots_in_um, write_visium

import stdiff as sd
from stdiff.pp import rasterize

pytest.importorskip("spatialdata_io")

GRID = dict(lr_um=100, factor=5, he_scale=2)
HE_UM = 0.5


@pytest.fixture(scope="module")
def source():
    """An 800 µm synthetic section with an H&E of 0.5 µm per pixel, its Visium spots and the direct µm section."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale

    s = sd.datasets.synthetic_tissue(size_um=800, n_genes=8, seed=1, he_um=HE_UM)
    spots, counts, genes = hex_spots(s)
    rgb = np.asarray(s.images["he"]["scale0"].ds["image"].data).transpose(1, 2, 0)
    he = Image2DModel.parse(rgb.transpose(2, 0, 1), dims=("c", "y", "x"), c_coords=["r", "g", "b"],
                            transformations={"global": Scale([HE_UM, HE_UM], axes=("x", "y"))},
                            scale_factors=[2, 2, 2, 2])  # fmt: skip
    return rgb, spots, counts, genes, spots_in_um(he, spots, counts, genes)


@pytest.mark.parametrize(
    ("counts_format", "positions"), [("h5", "csv"), ("mtx", "csv"), ("mtx", "list"), ("h5", "list_header")]
)
def test_read_visium_formats_give_the_direct_section(tmp_path, source, counts_format, positions):
    import dask.array as da

    rgb, spots, counts, genes, direct = source
    outs = write_visium(tmp_path / "run" / "outs", rgb, spots, counts, genes, um_per_px=HE_UM,
                        counts_format=counts_format, positions=positions)  # fmt: skip
    s = sd.io.read_visium(outs, fullres_image_file="fullres.tif")
    # named after the sample (the run folder), spatialdata-io's layout plus a µm system
    assert {"run", "run_um"} <= set(s.coordinate_systems) and "run_full_image" in s.images
    assert s.attrs["stdiff_micrometres"]["run_um"]["um_per_unit"] == pytest.approx(HE_UM, rel=1e-6)
    table = s.tables["table"]
    assert list(table.var_names) == genes and table.n_obs == len(spots)
    order = np.argsort(table.obs_names.to_numpy())
    X = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    np.testing.assert_array_equal(X[order], counts)
    # the full-resolution TIFF is not loaded: its levels are dask arrays read window by window
    assert isinstance(s.images["run_full_image"]["scale0"].ds["image"].data, da.Array)
    assert_same_section(rasterize(direct, **GRID), rasterize(s, **GRID))


def test_read_visium_paths_ids_and_errors(tmp_path, source):
    rgb, spots, counts, genes, direct = source
    outs = write_visium(tmp_path / "outs", rgb, spots, counts, genes, um_per_px=HE_UM, prefix="lib1")
    # the library prefix names the dataset; a counts file path works as well; no full image → the hires one
    s = sd.io.read_visium(outs / "lib1_filtered_feature_bc_matrix.h5")
    assert "lib1_um" in s.coordinate_systems and "lib1_full_image" not in s.images
    sec = rasterize(s, **GRID)
    assert sec.image_key == "lib1_hires_image" and s.tables["table"].X.sum() == counts.sum()
    assert "x_um" in sd.io.read_visium(outs, dataset_id="x").coordinate_systems
    with pytest.raises(FileNotFoundError, match="fullres_image_file.*nope.tif"):
        sd.io.read_visium(outs, fullres_image_file="nope.tif")

    (outs / "lib1_filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"filtered_feature_bc_matrix\.h5 or the filtered_feature_bc_matrix/"):
        sd.io.read_visium(outs)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no spatial/ folder"):
        sd.io.read_visium(tmp_path / "empty")
    with pytest.raises(ValueError, match="not a valid element name"):
        sd.io.read_visium(outs, dataset_id="a b")
    mtx = write_visium(tmp_path / "o2", rgb, spots, counts, genes, um_per_px=HE_UM, counts_format="mtx")
    (mtx / "filtered_feature_bc_matrix" / "features.tsv.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['features\.tsv\.gz'\]"):
        sd.io.read_visium(mtx)
    with pytest.raises(FileNotFoundError, match="counts_file='raw_feature_bc_matrix.h5'"):
        sd.io.read_visium(mtx, counts_file="raw_feature_bc_matrix.h5")
