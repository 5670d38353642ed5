"""The user-facing calls: superresolve, to_anndata, pl.superresolution, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import spatialdata
from spatialdata.transformations import Scale, get_transformation, set_transformation

import stdiff as sd
from stdiff.pp import aggregate


def _img(sdata, key):
    el = sdata.images[key]
    arr = el["scale0"].ds["image"].data if hasattr(el, "children") and len(el.children) else el.data
    return np.asarray(arr.compute() if hasattr(arr, "compute") else arr)


def _affine(el, cs="global"):
    t = get_transformation(el, cs)
    return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")))


def test_superresolve_outputs_shapes_genes_and_provenance(sdata, tiny_model):
    out = sd.tl.superresolve(sdata, ["PTPRC", "EPCAM"], model=tiny_model, counts_key="hr_counts", progress=False)
    assert out is None
    mean, std = _img(sdata, "stdiff"), _img(sdata, "stdiff_std")
    assert mean.shape == std.shape == (2, 40, 40)  # 800 µm at 20 µm
    assert list(sdata.images["stdiff"].coords["c"].values) == ["PTPRC", "EPCAM"]
    assert (mean >= 0).all() and (std >= 0).all() and mean.max() > 0
    prov = sdata.attrs["stdiff"]["stdiff"]
    assert prov["model_hash"] == tiny_model.model_hash() and prov["genes"] == ["PTPRC", "EPCAM"]
    assert prov["model"] == "DiffST"  # the class that wrote it (BaseModel.provenance)
    assert prov["factor"] == 5 and prov["sampler"].startswith("edm-") and prov["seed"] == 0
    assert prov["num_inference_steps"] == tiny_model.sampling_steps
    assert sdata.images["stdiff"].attrs["stdiff"]["kind"] == "mean"


def test_output_transform_overlays_histology(sdata, tiny_model):
    # give the H&E a non-trivial transform and a second coordinate system
    set_transformation(sdata["he"], Scale([2.0, 2.0], axes=("y", "x")), "doubled")
    sd.tl.superresolve(sdata, model=tiny_model, counts_key="hr_counts", coordinate_system="global", progress=False)
    A_out, A_he = _affine(sdata.images["stdiff"]), _affine(sdata["he"])
    # HR pixel centres (i + 0.5) land on the H&E pixel centres of the same µm position
    hr_um, he_um = 20.0, 1.0
    for i, j in [(0, 0), (3, 7), (39, 12)]:
        xy = A_out @ [j + 0.5, i + 0.5, 1]
        np.testing.assert_allclose(xy[:2], [(j + 0.5) * hr_um, (i + 0.5) * hr_um])
        he_px = np.linalg.inv(A_he) @ xy
        np.testing.assert_allclose(he_px[:2], [(j + 0.5) * hr_um / he_um, (i + 0.5) * hr_um / he_um])
    # composed from the H&E's own transform: it follows the H&E into its other coordinate system
    A2_out, A2_he = _affine(sdata.images["stdiff"], "doubled"), _affine(sdata["he"], "doubled")
    np.testing.assert_allclose(np.linalg.inv(A2_he) @ A2_out, np.linalg.inv(A_he) @ A_out, atol=1e-9)


def test_write_read_zarr_round_trip(sdata, tiny_model, tmp_path):
    sd.tl.superresolve(sdata, model=tiny_model, counts_key="hr_counts", progress=False)
    path = tmp_path / "out.zarr"
    sdata.write(path)
    back = spatialdata.read_zarr(path)
    np.testing.assert_array_equal(_img(back, "stdiff"), _img(sdata, "stdiff"))
    np.testing.assert_allclose(_affine(back.images["stdiff"]), _affine(sdata.images["stdiff"]))
    assert back.attrs["stdiff"]["stdiff"]["model_hash"] == tiny_model.model_hash()
    assert list(back.images["stdiff_std"].coords["c"].values) == tiny_model.genes
    # writing again over the same store gives spatialdata's own clear refusal (not a crash in the
    # in-memory result), and a fresh path works
    with pytest.raises(ValueError, match="Cannot overwrite"):
        sdata.write(path, overwrite=True)
    sdata.write(tmp_path / "again.zarr")
    # the result can be exported from the re-read object
    adata = sd.tl.to_anndata(back, "stdiff")
    assert adata.n_vars == len(tiny_model.genes)


def test_same_seed_same_output_different_seed_differs(sdata, tiny_model):
    a = sd.tl.superresolve(sdata, model=tiny_model, counts_key="hr_counts", seed=1, progress=False, copy=True)
    b = sd.tl.superresolve(sdata, model=tiny_model, counts_key="hr_counts", seed=1, progress=False, copy=True)
    c = sd.tl.superresolve(sdata, model=tiny_model, counts_key="hr_counts", seed=2, progress=False, copy=True)
    np.testing.assert_array_equal(_img(a, "stdiff_std"), _img(b, "stdiff_std"))
    assert not np.array_equal(_img(a, "stdiff_std"), _img(c, "stdiff_std"))
    # the mean is the stage-A regression: it does not depend on the sampler's seed
    np.testing.assert_array_equal(_img(a, "stdiff"), _img(c, "stdiff"))
    assert "stdiff" not in sdata.images  # copy=True leaves the input alone


def test_conserve_counts(sdata, tiny_model):
    sd.tl.superresolve(sdata, model=tiny_model, counts_key="hr_counts", conserve_counts=True, progress=False)
    mean = _img(sdata, "stdiff").astype(np.float64)
    sec = sd.tl.section_of(sdata)
    lr = sec.lr * sec.mask_lr
    np.testing.assert_allclose(aggregate(mean, 5), lr, rtol=1e-5, atol=1e-5 * max(1.0, lr.max()))


def test_rescale_to_lr_handles_empty_blocks():
    mean = np.zeros((1, 4, 4), np.float32)
    mean[0, :2, :2] = [[1, 3], [0, 0]]
    lr = np.array([[[8.0, 4.0], [0.0, 2.0]]])
    (out,) = sd.tl.rescale_to_lr(mean, lr, 2, np.ones((2, 2), bool))
    np.testing.assert_allclose(aggregate(out, 2), lr)
    np.testing.assert_allclose(out[0, :2, :2], [[2, 6], [0, 0]])  # shape kept, scaled
    np.testing.assert_allclose(out[0, :2, 2:], 1.0)  # empty prediction → uniform


def test_errors_leave_sdata_unchanged(sdata, tiny_model):
    before_images = set(sdata.images)
    before_attrs = dict(sdata.attrs)
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        sd.tl.superresolve(sdata, ["NOT_A_GENE"], model=tiny_model, progress=False)
    with pytest.raises(ValueError, match="coordinate_system='nope'"):
        sd.tl.superresolve(sdata, model=tiny_model, coordinate_system="nope", counts_key="hr_counts", progress=False)
    with pytest.raises(ValueError, match="factor=10"):
        sd.tl.superresolve(sdata, model=tiny_model, factor=10, counts_key="hr_counts", progress=False)
    with pytest.raises(KeyError, match="image_key='HE'"):
        sd.tl.superresolve(sdata, model=tiny_model, image_key="HE", counts_key="hr_counts", progress=False)
    assert set(sdata.images) == before_images and dict(sdata.attrs) == before_attrs


def test_superresolve_self_supervised_without_model(her2st_dir):
    from scipy.spatial import Delaunay

    s = sd.datasets.her2st("C5", data_dir=her2st_dir)
    genes = ["ERBB2", "KRT19", "CD74", "PTPRC"]
    # no lr_um: the spots stay measurements (legacy ST detected, 20 µm HR pixels by default); a coarser
    # HR pixel keeps the test fast
    sd.tl.superresolve(s, genes, hr_um=50, table_key="table", progress=False)
    mean, std = _img(s, "stdiff"), _img(s, "stdiff_std")
    sec = sd.tl.section_of(s)
    prov = s.attrs["stdiff"]["stdiff"]
    assert mean.shape == (4, *sec.mask_hr.shape) and sec.hr_um == 50
    assert prov["trained_here"] is True and prov["spots"]["platform"] == "st"
    # off the input mask the map is 0; on the tissue inside the spots' hull it is not (no holes between spots)
    assert (mean[:, ~sec.mask_hr] == 0).all()
    fp = sec.footprints()
    hull = (Delaunay(sec.spots.xy.T).find_simplex(fp.pixel_centres()) >= 0).reshape(sec.mask_hr.shape)
    assert (mean.sum(0)[hull & sec.mask_hr] == 0).mean() < 0.01 and (hull & sec.mask_hr).mean() > 0.3
    # the map is the fitted rate (it follows the spots' counts without painting them back)
    fitted, counts = fp.measure(mean), sec.spots.counts
    assert np.mean([np.corrcoef(np.log1p(a), np.log1p(b))[0, 1] for a, b in zip(fitted, counts, strict=True)]) > 0.6
    assert not np.allclose(fitted, counts, rtol=0.05)
    assert prov["model"] == "SpotRate"
    # the spread is calibrated on held-out spots and alive; conservation is an explicit option
    cal = prov["calibration"]
    assert cal["calibrated"] and 0.85 <= cal["coverage_held_out"] <= 0.95 and cal["held_out_spots"] == len(sec.spots)
    sd.tl.superresolve(s, genes, hr_um=50, table_key="table", progress=False, conserve_counts=True, key_added="kept")
    np.testing.assert_allclose(fp.measure(_img(s, "kept")), counts, rtol=1e-4, atol=1e-3)
    on = sec.mask_hr[None] & (mean > 0)
    assert std.min() >= 0 and (std[on] > 0).all() and on.sum() > 0.5 * on.shape[0] * sec.mask_hr.sum()
    # the coarsening scheme: trained on its own 4× aggregate of the spot-native map, then applied to it
    sd.tl.superresolve(s, genes, factor=4, lr_um=200, config="tiny", train_steps=3, table_key="table",
                       self_supervised="coarsen", progress=False, key_added="coarse")  # fmt: skip
    assert _img(s, "coarse").shape == mean.shape
    with pytest.raises(ValueError, match="pass genes="):
        sd.tl.superresolve(
            s,
            factor=2,
            lr_um=200,
            config="tiny",
            train_steps=1,
            table_key="table",
            progress=False,
            key_added="other",
        )
    assert "other" not in s.images


def test_to_anndata_bins_and_coordinates(sdata, tiny_model):
    sd.tl.superresolve(sdata, model=tiny_model, counts_key="hr_counts", progress=False)
    mean = _img(sdata, "stdiff")
    a1 = sd.tl.to_anndata(sdata, "stdiff", tissue_only=False)
    assert a1.shape == (40 * 40, len(tiny_model.genes))
    np.testing.assert_allclose(a1.obsm["spatial"][0], [10.0, 10.0])  # centre of pixel (0, 0), 20 µm
    np.testing.assert_allclose(a1.X.sum(0), mean.reshape(len(tiny_model.genes), -1).sum(1), rtol=1e-5)
    a2 = sd.tl.to_anndata(sdata, "stdiff", bin_size=4, tissue_only=False)
    assert a2.shape[0] == 100 and a2.uns["stdiff"]["bin_um"] == 80
    np.testing.assert_allclose(a2.X.sum(), a1.X.sum(), rtol=1e-5)
    np.testing.assert_allclose(a2.obsm["spatial"][0], [40.0, 40.0])
    assert "std_mean" in a2.obs
    with pytest.raises(KeyError, match="No image 'missing'"):
        sd.tl.to_anndata(sdata, "missing")


def test_squidpy_grid_neighbours_accept_output(sdata, tiny_model):
    sq = pytest.importorskip("squidpy")
    sd.tl.superresolve(sdata, model=tiny_model, counts_key="hr_counts", progress=False)
    adata = sd.tl.to_anndata(sdata, "stdiff")
    sq.gr.spatial_neighbors(adata, coord_type="grid", n_neighs=4)
    assert adata.obsp["spatial_connectivities"].sum(1).max() <= 4


def test_plot_superresolution(sdata, tiny_model, tmp_path):
    sd.tl.superresolve(sdata, model=tiny_model, counts_key="hr_counts", progress=False)
    fig = sd.pl.superresolution(sdata, ["EPCAM", "PTPRC"], save=tmp_path / "f.png")
    titles = [ax.get_title() for ax in fig.axes[:5]]
    assert titles[0] == "H&E" and titles[-1] == "truth"
    assert len([a for a in fig.axes if a.get_ylabel() in ("EPCAM", "PTPRC")]) == 2
    assert (tmp_path / "f.png").stat().st_size > 10_000
    with pytest.raises(KeyError, match="ZZZ"):
        sd.pl.superresolution(sdata, ["ZZZ"])


def test_cli_superresolve(sdata, tiny_model, tmp_path):
    from stdiff._cli import main

    inp, out, model = tmp_path / "in.zarr", tmp_path / "out.zarr", tmp_path / "m.pt"
    sdata.write(inp)
    tiny_model.save(model)
    assert (
        main(
            [
                "superresolve",
                str(inp),
                "--model",
                str(model),
                "--genes",
                "EPCAM,PTPRC",
                "--out",
                str(out),
                "--counts-key",
                "hr_counts",
                "--no-progress",
            ]
        )
        == 0
    )
    back = spatialdata.read_zarr(out)
    assert list(back.images["stdiff"].coords["c"].values) == ["EPCAM", "PTPRC"]


def test_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, stdiff; print('torch' in sys.modules, 'spatialdata' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def _documented_parameters(doc: str) -> list[str]:
    """Names in the numpydoc ``Parameters`` section (``a, b`` lines give both)."""
    import inspect

    lines = inspect.cleandoc(doc).splitlines()
    start = lines.index("Parameters") + 2
    names = []
    for i, line in enumerate(lines[start:], start):
        if i + 1 < len(lines) and set(lines[i + 1]) == {"-"}:  # the next section's header
            break
        if line and not line[0].isspace():
            names += [n.strip() for n in line.split(",")]
    return names


@pytest.mark.parametrize(
    "func",
    [sd.tl.superresolve, sd.tl.train, sd.tl.to_anndata, sd.tl.section_of, sd.tl.gene_names, sd.pl.superresolution],
    ids=lambda f: f"{f.__module__.split('.')[1]}.{f.__name__}",
)
def test_rendered_docstrings_document_every_parameter(func):
    import inspect

    assert "$" not in func.__doc__, "a shared-docs placeholder was left unfilled"
    documented = _documented_parameters(func.__doc__)
    assert documented == list(inspect.signature(func).parameters)


def test_fill_doc_indents_shared_entries_and_refuses_unknown_ones():
    from stdiff._docs import PARAMS, fill_doc

    def f(device):
        """Do.

        Parameters
        ----------
        $device
        """

    doc = fill_doc(f).__doc__
    first, *rest = PARAMS["device"].splitlines()
    assert f"\n        {first}\n" in doc and all(f"\n        {line}" in doc for line in rest)

    def g():
        """$no_such_entry"""

    with pytest.raises(KeyError, match="no_such_entry"):
        fill_doc(g)
