"""Tests of the synthetic tissue simulator (small sections, a few genes: fast)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("spatialdata")

from spatialdata.models import get_table_keys
from spatialdata.transformations import Scale, get_transformation

from stdiff.datasets._synthetic import CELL_TYPES, DOMAINS, synthetic_tissue

SIZE = 600.0
N_GENES = 20
SEED = 5  # a 600 µm section of this seed holds tumour nests, stroma, a lymphoid aggregate and fat


def _array(element) -> np.ndarray:
    """Full-resolution numpy array of an image element (single- or multi-scale)."""
    if hasattr(element, "children") and "scale0" in element.children:
        element = next(iter(element["scale0"].values()))
    return np.asarray(element.values)


@pytest.fixture(scope="module")
def sdata():
    return synthetic_tissue(size_um=SIZE, n_genes=N_GENES, seed=SEED, transcripts=True)


@pytest.fixture(scope="module")
def genes(sdata):
    return sdata.attrs["synthetic"]["genes"]


def _rebin(counts: np.ndarray, f: int) -> np.ndarray:
    g, h, w = counts.shape
    return counts[:, : h // f * f, : w // f * f].reshape(g, h // f, f, w // f, f).sum((2, 4))


# ----------------------------------------------------------------------------------------------
# structure
# ----------------------------------------------------------------------------------------------
def test_elements_dims_dtypes_transforms(sdata, genes):
    assert {"he", "hr_counts"} <= set(sdata.images)
    assert "cells" in sdata.shapes and "table" in sdata.tables and "transcripts" in sdata.points
    assert "domains" in sdata.labels

    he = sdata["he"]
    assert list(he.children) == ["scale0", "scale1", "scale2"]  # [2, 4] pyramid
    he0 = next(iter(he["scale0"].values()))
    assert he0.dims == ("c", "y", "x")
    assert list(he0.coords["c"].values) == ["r", "g", "b"]
    assert he0.dtype == np.uint8
    assert he0.shape == (3, 600, 600)
    tf = get_transformation(he0, to_coordinate_system="global")
    assert isinstance(tf, Scale) and tuple(tf.axes) == ("y", "x") and np.allclose(tf.scale, [1.0, 1.0])

    hr = sdata["hr_counts"]
    assert hr.dims == ("c", "y", "x")
    assert hr.dtype == np.float32
    assert list(hr.coords["c"].values) == genes
    assert hr.shape == (N_GENES, 120, 120)
    tf = get_transformation(hr, to_coordinate_system="global")
    assert isinstance(tf, Scale) and np.allclose(tf.scale, [5.0, 5.0])

    assert sdata["domains"].shape == (120, 120)
    assert set(np.unique(sdata["domains"].values)) <= set(range(len(DOMAINS)))


def test_cells_table_and_attrs(sdata, genes):
    cells = sdata["cells"]
    table = sdata["table"]
    assert {"cell_type", "domain", "radius"} <= set(cells.columns)
    assert (cells.geom_type == "Point").all()
    region, region_key, instance_key = get_table_keys(table)
    assert region == "cells" and instance_key == "cell_id"
    assert table.n_obs == len(cells) and list(table.var_names) == genes
    assert table.X.dtype == np.float32 and (table.X >= 0).all()
    assert np.array_equal(table.obs[instance_key].to_numpy(), cells.index.to_numpy())
    assert list(table.obs["cell_type"].cat.categories) == list(CELL_TYPES)
    assert set(table.obs["cell_type"].unique()) >= {"tumour", "fibroblast", "T_cell", "B_cell", "adipocyte"}
    xy = np.c_[cells.geometry.x, cells.geometry.y]
    assert (xy >= 0).all() and (xy < SIZE).all()

    info = sdata.attrs["synthetic"]
    assert info["genes"] == genes and info["cell_types"] == list(CELL_TYPES)
    assert info["params"]["seed"] == SEED and info["params"]["bin_um"] == 5.0
    assert "ERBB2" in info["latent_genes"] and "EPCAM" not in info["latent_genes"]
    assert info["markers"]["tumour"][:1] == ["EPCAM"]
    assert {"MKI67", "TOP2A"} <= set(info["modules"]["proliferation"])
    # all domains are present in this section
    assert all(info["domain_fractions"][d] > 0.02 for d in ("stroma", "tumour", "immune", "fat"))


@pytest.mark.parametrize(
    ("size", "he_um", "bin_um", "he_shape", "bin_shape"),
    [((300.0, 400.0), 0.5, 10.0, (600, 800), (30, 40)), (200.0, 1.0, 20.0, (200, 200), (10, 10))],
)
def test_sizes_follow_parameters(size, he_um, bin_um, he_shape, bin_shape):
    sd = synthetic_tissue(size_um=size, n_genes=5, seed=1, he_um=he_um, bin_um=bin_um)
    assert _array(sd["he"]).shape == (3, *he_shape)
    assert sd["hr_counts"].shape == (5, *bin_shape)
    tf = get_transformation(sd["hr_counts"], to_coordinate_system="global")
    assert np.allclose(tf.scale, [bin_um, bin_um])
    tf = get_transformation(_he0(sd), to_coordinate_system="global")
    assert np.allclose(tf.scale, [he_um, he_um])


def _he0(sd):
    he = sd["he"]
    return next(iter(he["scale0"].values())) if hasattr(he, "children") and "scale0" in he.children else he


def test_gene_names_and_padding():
    g12 = synthetic_tissue(size_um=200, n_genes=12, seed=0).attrs["synthetic"]["genes"]
    g70 = synthetic_tissue(size_um=200, n_genes=70, seed=0).attrs["synthetic"]["genes"]
    assert g70[:12] == g12 and len(set(g70)) == 70
    assert g70[-1].startswith("GENE_")
    assert {"EPCAM", "COL1A1", "PTPRC", "CD3E", "MS4A1", "CD68", "PECAM1", "ADIPOQ"} <= set(g12)


# ----------------------------------------------------------------------------------------------
# counts, transcripts, determinism
# ----------------------------------------------------------------------------------------------
def test_counts_are_nonnegative_integers_and_sparse(sdata):
    c = sdata["hr_counts"].values
    assert (c >= 0).all() and np.array_equal(c, np.round(c))
    c10 = _rebin(c, 2)  # 10 µm bins: realistic sparsity, most genes mostly zero
    assert np.median((c10 == 0).mean((1, 2))) > 0.6
    assert c.sum() > 0


def test_transcripts_bin_exactly_to_hr_counts(sdata, genes):
    pts = sdata["transcripts"].compute()
    assert sdata["transcripts"].attrs["spatialdata_attrs"]["feature_key"] == "gene"
    assert list(pts["gene"].cat.categories) == genes
    b = sdata.attrs["synthetic"]["params"]["bin_um"]
    ny, nx = sdata["hr_counts"].shape[1:]
    iy = np.floor(pts["y"].to_numpy(np.float64) / b).astype(int)
    ix = np.floor(pts["x"].to_numpy(np.float64) / b).astype(int)
    assert iy.min() >= 0 and ix.min() >= 0 and iy.max() < ny and ix.max() < nx
    g = pts["gene"].cat.codes.to_numpy().astype(np.int64)
    binned = np.bincount((g * ny + iy) * nx + ix, minlength=len(genes) * ny * nx).reshape(len(genes), ny, nx)
    assert np.array_equal(binned, sdata["hr_counts"].values)
    assert sdata.attrs["synthetic"]["n_transcripts"] == len(pts)


def test_same_seed_identical_different_seed_differs():
    kw = {"size_um": 300, "n_genes": 8}
    a = synthetic_tissue(seed=7, **kw)
    b = synthetic_tissue(seed=7, **kw)
    c = synthetic_tissue(seed=8, **kw)
    assert np.array_equal(_array(a["he"]), _array(b["he"]))
    assert np.array_equal(a["hr_counts"].values, b["hr_counts"].values)
    assert np.array_equal(a["table"].X, b["table"].X)
    assert not np.array_equal(_array(a["he"]), _array(c["he"]))
    assert not np.array_equal(a["hr_counts"].values, c["hr_counts"].values)
    # emitting the transcripts does not change the sampled counts
    d = synthetic_tissue(seed=7, transcripts=True, **kw)
    assert np.array_equal(a["hr_counts"].values, d["hr_counts"].values)


# ----------------------------------------------------------------------------------------------
# biology: histology, markers, hidden variation, co-expression
# ----------------------------------------------------------------------------------------------
def test_nuclei_are_darker_and_bluer_than_stroma(sdata):
    from scipy.spatial import cKDTree
    from skimage.color import rgb2hed

    rgb = np.moveaxis(_array(sdata["he"]), 0, -1)
    hema = rgb2hed(rgb)[..., 0]
    cells = sdata["cells"]
    xy = np.c_[cells.geometry.x, cells.geometry.y]
    ct = cells["cell_type"].to_numpy()
    nuc = xy[np.isin(ct, ["tumour", "T_cell", "B_cell", "fibroblast"])].astype(int)
    # stroma pixels far from any cell centre
    dom = np.kron(sdata["domains"].values, np.ones((5, 5), np.uint8))
    yy, xx = np.nonzero(dom == DOMAINS.index("stroma"))
    far = cKDTree(xy).query(np.c_[xx, yy] + 0.5, k=1)[0] > 12
    yy, xx = yy[far], xx[far]
    assert yy.size > 1000
    h_nuc, h_str = hema[nuc[:, 1], nuc[:, 0]].mean(), hema[yy, xx].mean()
    assert h_nuc > h_str + 0.03
    blue_minus_red = rgb[..., 2].astype(float) - rgb[..., 0]
    assert blue_minus_red[nuc[:, 1], nuc[:, 0]].mean() > blue_minus_red[yy, xx].mean() + 20
    # background (outside the tissue) is bright
    bg = dom == DOMAINS.index("background")
    if bg.sum() > 100:
        assert rgb[bg].mean() > 225


def test_markers_enriched_in_their_domain_and_type(sdata, genes):
    c = sdata["hr_counts"].values
    dom = sdata["domains"].values
    tissue = dom != DOMAINS.index("background")
    for gene, domain in [("EPCAM", "tumour"), ("KRT19", "tumour"), ("MS4A1", "immune"), ("ADIPOQ", "fat")]:
        x = c[genes.index(gene)]
        inside = dom == DOMAINS.index(domain)
        assert x[inside].mean() > 3 * x[tissue & ~inside].mean(), gene
    table = sdata["table"]
    ct = table.obs["cell_type"].to_numpy()
    markers = sdata.attrs["synthetic"]["markers"]
    for t, gs in markers.items():
        for gene in gs:
            x = table.X[:, genes.index(gene)]
            assert x[ct == t].mean() > 5 * x[ct != t].mean(), (t, gene)


def test_within_type_hidden_variation(sdata, genes):
    from scipy.spatial import cKDTree

    table = sdata["table"]
    tum = (table.obs["cell_type"] == "tumour").to_numpy()
    X = table.X[tum]
    xy = table.obsm["spatial"][tum]
    erbb2, mki67, epcam = (X[:, genes.index(g)] for g in ("ERBB2", "MKI67", "EPCAM"))
    cv = lambda v: v.std() / v.mean()
    # far above Poisson noise (1 / sqrt(mean)) and above the marker's per-cell noise
    for v in (erbb2, mki67):
        assert cv(v) > 3 / np.sqrt(v.mean())
    assert cv(mki67) > 2 * cv(epcam)
    # the variation is spatially structured (hidden subclones), not per-cell noise
    nn = cKDTree(xy).query(xy, k=2)[1][:, 1]
    le, lm = np.log(erbb2), np.log(epcam)
    r_latent, r_marker = np.corrcoef(le, le[nn])[0, 1], np.corrcoef(lm, lm[nn])[0, 1]
    assert r_latent > 0.3 and r_latent > r_marker + 0.25
    # ... and it is not encoded in the H&E: nuclear stain does not track ERBB2
    rgb = _array(sdata["he"])
    px = np.clip(xy.astype(int), 0, rgb.shape[-1] - 1)
    blue = rgb[2, px[:, 1], px[:, 0]].astype(float)
    assert abs(np.corrcoef(blue, le)[0, 1]) < 0.25


def test_modules_are_coexpressed(sdata, genes):
    c20 = _rebin(sdata["hr_counts"].values, 4).reshape(len(genes), -1)
    c20 = c20[:, c20.sum(0) > 0]
    r = np.corrcoef(c20)
    gi = genes.index
    same = [("MKI67", "TOP2A"), ("ERBB2", "GRB7"), ("ISG15", "IFI6")]
    for a, b in same:
        assert r[gi(a), gi(b)] > 0.3, (a, b)
    # within tumour bins (no composition effect) same-module pairs beat cross-module pairs
    dom = sdata["domains"].values[::4, ::4].ravel()  # 20 µm bins (upper-left 5 µm bin's domain)
    c20 = _rebin(sdata["hr_counts"].values, 4).reshape(len(genes), -1)
    tum = dom == DOMAINS.index("tumour")
    rt = np.corrcoef(c20[:, tum])
    assert rt[gi("MKI67"), gi("TOP2A")] > rt[gi("MKI67"), gi("ERBB2")] + 0.2
    assert rt[gi("ERBB2"), gi("GRB7")] > rt[gi("ERBB2"), gi("TOP2A")] + 0.2
