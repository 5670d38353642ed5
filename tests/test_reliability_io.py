"""Building a section from the user's own data: inputs are matched by their ids, values are kept exactly,
and every bad input is refused with a message naming what was passed and the fix (never a library's
raw exception). Property-based where the input space is large (counts, positions, ids).
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stdiff as sd

GENES = ["g0", "g1", "g2"]
PROPERTY = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def hex_lattice(n_rows: int = 5, n_cols: int = 5, pitch: float = 100.0) -> np.ndarray:
    """Centres ``(n, 2)`` µm of a Visium-like hexagonal lattice, 100 µm from the image's corner."""
    r, c = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    x = 100.0 + c.ravel() * pitch + (pitch / 2) * (r.ravel() % 2)
    y = 100.0 + r.ravel() * pitch * np.sqrt(3) / 2
    return np.c_[x, y]


XY = hex_lattice()
N = len(XY)
IDS = [f"AAAC{i:03d}-1" for i in range(N)]
IMAGE = np.full((700, 700, 3), 210, np.uint8)  # 1 µm / px


def build(counts=None, positions=None, image=IMAGE, **kw):
    """``from_spots`` of the 25-spot lattice (µm positions, 55 µm spots) with any argument replaced."""
    kw = {"genes": GENES, "spot_ids": IDS, "units": "um", "um_per_px": 1.0, "spot_diameter_um": 55.0, **kw}
    counts = np.ones((N, len(GENES)), int) if counts is None else counts
    return sd.io.from_spots(counts, XY if positions is None else positions, image, **kw)


def _raises_ours(match: str, fn, exc=ValueError):
    """``fn()`` raises ``exc`` from stdiff (not a library) with a message matching ``match``."""
    import traceback

    with pytest.raises(exc, match=match) as err:
        fn()
    assert "/stdiff/" in traceback.extract_tb(err.value.__traceback__)[-1].filename.replace("\\", "/")
    return err


# ------------------------------------------------------------------------------------- counts, kept exactly


@PROPERTY
@given(
    st.lists(st.integers(0, 2**40), min_size=N * 3, max_size=N * 3),
    st.sampled_from(["int64", "float64", "float32"]),
)
def test_counts_are_kept_exactly_whatever_their_size_and_dtype(values, dtype):
    counts = np.asarray(values, dtype=np.float64).reshape(N, 3).astype(dtype)
    X = build(counts)["table"].X.toarray()
    np.testing.assert_array_equal(X.astype(np.float64), counts.astype(np.float64))
    if X.dtype == np.int32:
        assert counts.max() <= np.iinfo(np.int32).max


@PROPERTY
@given(st.integers(0, N * 3 - 1), st.sampled_from([np.nan, np.inf, -np.inf, -1.0, -0.5]))
def test_bad_counts_are_refused(where, value):
    counts = np.ones((N, 3), np.float64)
    counts.flat[where] = value
    match = r"NaN or infinite value" if not np.isfinite(value) else r"negative values \(min -"
    _raises_ours(match, lambda: build(counts))
    sparse = pytest.importorskip("scipy.sparse").csr_matrix(counts)
    _raises_ours(match, lambda: build(sparse))


def test_counts_of_the_wrong_shape_or_kind():
    frame = pd.DataFrame(np.ones((N, 3), int), index=IDS, columns=GENES).assign(cell_type="tumour")
    _raises_ours(r"1 column\(s\) that are not counts, e.g. \['cell_type'\].*drop", lambda: build(frame, genes=None))
    _raises_ours(r"reshape\(-1, 1\) with genes=\['name'\]", lambda: build(np.ones(N), genes=["g0"]))
    _raises_ours(r"Series.*to_frame", lambda: build(frame["g0"], genes=None))
    _raises_ours(r"counts is None", lambda: sd.io.from_spots(None, XY, IMAGE, units="um", um_per_px=1.0))
    _raises_ours(r"3 columns but genes= has 2", lambda: build(genes=["a", "b"]))
    _raises_ours(r"25 rows .* spot_ids= has 3", lambda: build(spot_ids=["a", "b", "c"]))
    _raises_ours(r"counts is empty", lambda: build(np.ones((N, 0)), genes=[]))


def test_repeated_gene_names_are_refused_not_renamed():
    _raises_ours(r"Gene names repeat: \['g0'\].*groupby", lambda: build(genes=["g0", "g1", "g0"]))
    frame = pd.DataFrame(np.ones((N, 3), int), index=IDS, columns=["g0", "g0", "g1"])
    _raises_ours(r"Gene names repeat", lambda: build(frame, genes=None))


# ------------------------------------------------------------------------------- positions, paired by id


@PROPERTY
@given(st.permutations(range(N)))
def test_positions_are_paired_with_counts_by_spot_id(order):
    counts = pd.DataFrame(np.arange(N * 3).reshape(N, 3), index=IDS, columns=GENES)
    positions = pd.DataFrame(XY, index=IDS, columns=["x", "y"]).iloc[list(order)]
    t = sd.io.from_spots(counts, positions, IMAGE, units="um", um_per_px=1.0, spot_diameter_um=55.0)["table"]
    assert list(t.obs_names) == IDS  # the counts' order
    np.testing.assert_allclose(t.obsm["spatial"], XY)  # every spot at its own position
    np.testing.assert_array_equal(t.X.toarray(), counts.to_numpy())


def test_positions_naming_other_spots_are_refused():
    counts = pd.DataFrame(np.ones((N, 3), int), index=IDS, columns=GENES)
    other = pd.DataFrame(XY, index=[f"other{i}" for i in range(N)], columns=["x", "y"])
    err = _raises_ours(r"name different spots: 25 of the 25 .* no position", lambda: build(counts, other, genes=None))
    assert "positions.loc[counts.index]" in str(err.value)
    # a frame indexed by row numbers (e.g. left from filtering) is in the counts' order, as an array is
    by_row = pd.DataFrame(XY, index=np.arange(N) * 2, columns=["x", "y"])
    np.testing.assert_allclose(build(counts, by_row, genes=None)["table"].obsm["spatial"], XY)


@PROPERTY
@given(st.integers(0, N - 1), st.sampled_from(["nan", "inf", "repeat"]))
def test_bad_positions_are_refused(i, kind):
    xy = XY.copy()
    if kind == "repeat":
        xy[i] = xy[(i + 1) % N]
        match = r"2 spots share a position"
    else:
        xy[i, i % 2] = np.nan if kind == "nan" else np.inf
        match = rf"1 spot position\(s\) are NaN or infinite, e.g. spot '{IDS[i]}'"
    _raises_ours(match, lambda: build(positions=xy))


def test_too_few_or_collapsed_positions():
    _raises_ours(r"There is 1 spot.*at least 2", lambda: build(np.ones((1, 3)), XY[:1], spot_ids=IDS[:1]))
    _raises_ours(r"All 25 spots are at one point", lambda: build(positions=XY * 0 + 300))
    _raises_ours(r"positions must be \(25, 2\).*positions\.T", lambda: build(positions=XY.T))
    _raises_ours(r"positions is None", lambda: sd.io.from_spots(np.ones((N, 3)), None, IMAGE, genes=GENES))


# --------------------------------------------------------------------------------------- the image, the scale


def test_the_image_must_be_there_and_finite(tmp_path):
    _raises_ours(r"image is None", lambda: build(image=None))
    nan = IMAGE.astype(np.float32)
    nan[:10] = np.nan
    _raises_ours(r"The image has (about )?\d+% NaN or infinite pixels", lambda: build(image=nan))
    _raises_ours(r"100% NaN", lambda: build(image=np.full((700, 700, 3), np.nan, np.float32)))
    _raises_ours(r"2-D or 3-D", lambda: build(image=np.zeros((1, 3, 10, 10))))
    bad = tmp_path / "he.png"
    bad.write_bytes(b"not an image")
    _raises_ours(r"(Could not|Cannot) read the image( file)? '.*he\.png'", lambda: build(image=bad))
    _raises_ours(r"No image file '.*nope\.png'", lambda: build(image=tmp_path / "nope.png"), FileNotFoundError)
    element = build()["he"]
    _raises_ours(
        r"no transformation to coordinate_system='aligned'", lambda: build(image=element, coordinate_system="aligned")
    )
    _raises_ours(r"image must be an array, a file path", lambda: build(image=[[1, 2], [3, 4]]), TypeError)


@pytest.mark.parametrize(
    ("scale", "kw", "match"),
    [
        (1.15, {}, r"platform='visium' has spots 100 µm apart \(±10%\), but these are 115 µm apart"),
        (0.85, {}, r"platform='visium' has spots 100 µm apart \(±10%\), but these are 85 µm apart"),
        # positions in µm declared as pixels of 0.5 µm: a 50 µm pitch
        (1.0, {"units": "px", "um_per_px": 0.5}, r"50 µm apart .*if they are already µm, pass units='um'"),
        # the inverse of the affine pixel → µm
        (0.5, {"units": "px", "um_per_px": None, "affine": [[0.5, 0, 0], [0, 0.5, 0]]}, r"not µm to pixels"),
        (2.0, {"units": "px", "um_per_px": None, "affine": [[2, 0, 0], [0, 2, 0]]}, r"hex lattice .* at 4× its size"),
    ],
)
def test_spots_off_the_declared_platform_are_refused(scale, kw, match):
    image = np.full((1400, 1400, 3), 200, np.uint8)
    kw = {"platform": "visium", "spot_diameter_um": None, **kw}
    _raises_ours(match, lambda: build(positions=XY * scale, image=image, **kw))


def test_a_lattice_with_spots_missing_is_warned_about_not_refused(caplog):
    r, c = np.divmod(np.arange(N), 5)
    keep = (r % 2 == 0) & (c % 2 == 0)  # every other row and column: neighbours 1.7 and 2 pitches apart
    counts = np.ones((keep.sum(), 3), int)
    with caplog.at_level(logging.WARNING, logger="stdiff"):
        out = build(counts, XY[keep], spot_ids=list(np.asarray(IDS)[keep]), platform="visium", spot_diameter_um=None)
    assert out["table"].n_obs == keep.sum()
    assert any("lattice with most spots missing" in r.getMessage() for r in caplog.records)


def test_overlapping_spots_unknown_platforms_and_far_spots():
    _raises_ours(r"Spots of 150 µm would overlap: their centres are 100 µm apart", lambda: build(spot_diameter_um=150))
    _raises_ours(r"platform must be 'visium' or 'st'", lambda: build(platform="10x"))
    _raises_ours(r"neither Visium's 100 µm nor legacy ST's 200 µm.*spot_diameter_um=",
                 lambda: build(positions=XY * 1.5, spot_diameter_um=None))  # fmt: skip
    far = XY.copy()
    far[7] = [5800.0, 300.0]
    _raises_ours(r"1 of 25 spots lie outside the image .* 'AAAC007-1' at \(5800, 300\)", lambda: build(positions=far))
    # a spot just over the image's edge (a crop through a spot) is fine
    edge = XY.copy()
    edge[0] = [-20.0, 100.0]
    assert build(positions=edge)["table"].n_obs == N


def test_the_platform_is_told_by_the_pitch_when_not_given():
    out = build(spot_diameter_um=None)
    assert out.attrs["stdiff_section"]["platform"] == "visium"
    assert out.attrs["stdiff_section"]["spot_diameter_um"] == 55.0


# ------------------------------------------------------------------------------------------------ readers


def _st_folder(tmp_path, counts_rows=slice(None), duplicate=False):
    from PIL import Image

    xy = np.array([[x, y] for y in range(100, 700, 200) for x in range(100, 700, 200)], float)
    ax, ay = (xy[:, 0] // 200 + 1).astype(int), (xy[:, 1] // 200 + 1).astype(int)
    keys = [f"{a}x{b}" for a, b in zip(ax, ay)]
    spots = pd.DataFrame({"x": ax, "y": ay, "pixel_x": xy[:, 0], "pixel_y": xy[:, 1], "selected": 1})
    spots.to_csv(tmp_path / "spots.tsv", sep="\t", index=False)
    counts = pd.DataFrame(np.arange(len(xy) * 2).reshape(-1, 2), index=keys, columns=["a", "b"]).iloc[counts_rows]
    if duplicate:
        counts = pd.concat([counts, counts.iloc[:1]])
    counts.to_csv(tmp_path / "counts.tsv", sep="\t")
    Image.fromarray(IMAGE).save(tmp_path / "he.png")
    return tmp_path / "counts.tsv", tmp_path / "spots.tsv", tmp_path / "he.png"


def test_read_st_says_how_many_spots_it_dropped(tmp_path, caplog):
    files = _st_folder(tmp_path, counts_rows=slice(0, None, 2))
    with caplog.at_level(logging.WARNING, logger="stdiff"):
        sdata = sd.io.read_st(*files)
    assert sdata["table"].n_obs == 5
    assert any(re.search(r"4 of the 9 spots of .*spots\.tsv are not in .*counts\.tsv and were dropped; 5 spots kept",
                         r.getMessage()) for r in caplog.records)  # fmt: skip


def test_read_st_repeated_rows_and_unreadable_files(tmp_path):
    counts, spots, image = _st_folder(tmp_path, duplicate=True)
    err = _raises_ours(r"counts\.tsv names 1 spot\(s\) more than once, e.g. \['1x1'\]", lambda: sd.io.read_st(
        counts, spots, image))  # fmt: skip
    assert "positions must be" not in str(err.value)
    counts.write_text("")
    _raises_ours(r"counts\.tsv' is empty", lambda: sd.io.read_st(counts, spots, image))
    counts.write_text("\tA\tB\n")
    _raises_ours(r"counts\.tsv' has a header .* but no rows", lambda: sd.io.read_st(counts, spots, image))
    _raises_ours(r"No file '.*nope\.tsv'", lambda: sd.io.read_st(tmp_path / "nope.tsv", spots, image),
                 FileNotFoundError)  # fmt: skip


@pytest.fixture
def spots_table(tmp_path):
    pos = pd.DataFrame({"barcode": IDS, "x": XY[:, 0], "y": XY[:, 1]})
    pos.to_csv(tmp_path / "pos.csv", index=False)
    pd.DataFrame(np.ones((N, 3), int), index=IDS, columns=GENES).to_csv(tmp_path / "counts.csv")
    return tmp_path, pos


def test_read_spots_table_drops_loudly_and_names_files(spots_table, caplog):
    import anndata as ad

    d, pos = spots_table
    kw = dict(units="um", um_per_px=1.0, spot_diameter_um=55.0)
    half = ad.AnnData(np.ones((10, 3)), obs=pd.DataFrame(index=IDS[:10]), var=pd.DataFrame(index=GENES))
    with caplog.at_level(logging.WARNING, logger="stdiff"):
        out = sd.io.read_spots_table(d / "pos.csv", half, IMAGE, **kw)
    assert list(out["table"].obs_names) == IDS[:10]
    assert any("15 of the 25 spots of" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)
    for content, match in [("", r"pos\.csv' is empty"), ("barcode,x,y\n", r"pos\.csv' has a header"),
                           ('barcode,x,y\n"a,1,2\n', r"Could not read '.*pos\.csv'")]:  # fmt: skip
        (d / "pos.csv").write_text(content)
        _raises_ours(match, lambda: sd.io.read_spots_table(d / "pos.csv", d / "counts.csv", IMAGE, **kw))
    pd.concat([pos, pos.iloc[:2]]).to_csv(d / "pos.csv", index=False)
    _raises_ours(r"pos\.csv names 2 spot\(s\) more than once", lambda: sd.io.read_spots_table(
        d / "pos.csv", d / "counts.csv", IMAGE, **kw))  # fmt: skip
    pos.assign(x="left").to_csv(d / "pos.csv", index=False)
    _raises_ours(r"Columns \['x'\] of .*pos\.csv are not numbers", lambda: sd.io.read_spots_table(
        d / "pos.csv", d / "counts.csv", IMAGE, **kw))  # fmt: skip
    (d / "bad.h5ad").write_bytes(b"nope")
    _raises_ours(r"Could not read '.*bad\.h5ad' as an AnnData", lambda: sd.io.read_spots_table(
        pos, d / "bad.h5ad", IMAGE, **kw))  # fmt: skip


@PROPERTY
@given(st.permutations(range(N)), st.integers(1, N))
def test_read_spots_table_pairs_barcodes_in_any_order(order, n_counts):
    pos = pd.DataFrame({"barcode": IDS, "x": XY[:, 0], "y": XY[:, 1]}).iloc[list(order)]
    counts = pd.DataFrame(np.arange(N * 3).reshape(N, 3), index=IDS, columns=GENES).iloc[:n_counts]
    if n_counts < 2:
        with pytest.raises(ValueError, match="at least 2"):
            sd.io.read_spots_table(pos, counts, IMAGE, units="um", um_per_px=1.0, spot_diameter_um=55.0)
        return
    t = sd.io.read_spots_table(pos, counts, IMAGE, units="um", um_per_px=1.0, spot_diameter_um=55.0)["table"]
    kept = [IDS[i] for i in order if i < n_counts]
    assert list(t.obs_names) == kept  # the positions' order, only barcodes with counts
    np.testing.assert_array_equal(t.X.toarray(), counts.loc[kept].to_numpy())
    np.testing.assert_allclose(t.obsm["spatial"], pd.DataFrame(XY, index=IDS).loc[kept].to_numpy())
