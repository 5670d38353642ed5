"""Real-data loaders (her2st, mini MERFISH, mini Visium) against the shared data folder.

The data root is ``$STDIFF_DATA_DIR`` (a relative value is tried against the working directory, then the
repository root) or, when unset, ``../shared/data`` next to the repository. Tests that need data skip when
the dataset folder is absent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import stdiff as sd

REPO_ROOT = Path(__file__).resolve().parents[1]

HER2ST = "her2st_ST_breast_HE"
MERFISH = "giotto_mini_merfish_mouse_brain"
VISIUM = "giotto_mini_visium_mouse_brain"

# spots selected under tissue AND present in the counts file (dataset README)
HER2ST_N_SPOTS = {"B4": 283, "C2": 187, "C3": 180, "C4": 184, "C5": 181}
HER2ST_N_GENES = {"B4": 15289, "C5": 15721}


# ``data_root`` (the shared data folder, skipping when absent) comes from conftest.py.


def _require(root: Path, folder: str) -> Path:
    path = root / folder
    if not path.is_dir():
        pytest.skip(f"{path} not found: STDIFF_DATA_DIR must contain {folder}/")
    return path


def _affine_xy(element, cs: str = "global") -> np.ndarray:
    """3x3 intrinsic (x, y) -> cs (x, y) matrix of an element, read through spatialdata."""
    from spatialdata.transformations import get_transformation

    t = get_transformation(element, to_coordinate_system=cs)
    return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def _check_spots_table(sdata, n: int) -> None:
    table = sdata["table"]
    spots = sdata["spots"]
    assert len(spots) == n and table.n_obs == n
    assert table.uns["spatialdata_attrs"]["region"] == "spots"
    assert table.uns["spatialdata_attrs"]["region_key"] == "region"
    assert table.uns["spatialdata_attrs"]["instance_key"] == "spot_id"
    assert list(table.obs["spot_id"]) == list(spots.index)
    assert (spots.geom_type == "Point").all() and "radius" in spots.columns
    np.testing.assert_allclose(table.obsm["spatial"], np.c_[spots.geometry.x, spots.geometry.y])
    assert table.var_names.is_unique
    import scipy.sparse as sp

    assert sp.issparse(table.X) and table.X.dtype == np.int32


# --------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("folder", [HER2ST, MERFISH, VISIUM])
def test_registry_sha256_matches_local_files(data_root, folder):
    from stdiff.datasets._registry import REGISTRY

    base = _require(data_root, folder)
    for relpath, sha in REGISTRY[folder].items():
        path = base / relpath
        assert path.is_file(), f"registered file missing locally: {path}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, relpath


def test_registry_urls_pinned():
    from stdiff.datasets._registry import GIOTTODATA_COMMIT, HER2ST_COMMIT, url

    assert url("her2st", "ST-cnts/B4.tsv.gz") == (
        f"https://raw.githubusercontent.com/almaan/her2st/{HER2ST_COMMIT}/data/ST-cnts/B4.tsv.gz"
    )
    assert url(MERFISH, "images/mini_dataset_dapi_z0.jpg").endswith(
        f"GiottoData/{GIOTTODATA_COMMIT}/inst/Mini_datasets/Vizgen/Raw/images/mini_dataset_dapi_z0.jpg"
    )
    assert url(VISIUM, "visium_DG_locs.txt").endswith("/inst/Mini_datasets/Visium/Raw/visium_DG_locs.txt")


def test_fetch_prefers_local_copy(data_root, monkeypatch):
    from stdiff.datasets._registry import fetch

    _require(data_root, HER2ST)
    expected = data_root / HER2ST / "ST-spotfiles/B4_selection.tsv"
    assert fetch("her2st", "ST-spotfiles/B4_selection.tsv", data_dir=data_root) == expected
    monkeypatch.setenv("STDIFF_DATA_DIR", str(data_root))
    assert fetch(HER2ST, "ST-spotfiles/B4_selection.tsv") == expected


@pytest.fixture
def local_http(data_root):
    """Serve the her2st folder over http://127.0.0.1 so the pooch download path runs offline."""
    import functools
    import http.server
    import threading

    base = _require(data_root, HER2ST)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(base))
    handler.log_message = lambda *a, **k: None
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    except OSError as err:  # pragma: no cover - sandbox without sockets
        pytest.skip(f"cannot open a localhost socket: {err}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_fetch_downloads_and_verifies(local_http, tmp_path, monkeypatch):
    from stdiff.datasets import _registry

    relpath = "ST-spotfiles/C5_selection.tsv"
    monkeypatch.setitem(_registry.DATASETS, HER2ST, local_http)
    out = _registry.fetch("her2st", relpath, data_dir=tmp_path / "cache")
    assert out == tmp_path / "cache" / HER2ST / relpath
    assert hashlib.sha256(out.read_bytes()).hexdigest() == _registry.REGISTRY[HER2ST][relpath]
    # a wrong hash is refused, with a message saying where a local copy is expected
    monkeypatch.setitem(_registry.REGISTRY[HER2ST], relpath, "0" * 64)
    with pytest.raises(RuntimeError, match="local copy"):
        _registry.fetch("her2st", relpath, data_dir=tmp_path / "other")


def test_fetch_unregistered_missing_file(tmp_path):
    from stdiff.datasets._registry import fetch

    with pytest.raises(FileNotFoundError, match="STDIFF_DATA_DIR"):
        fetch("her2st", "ST-cnts/Z9.tsv.gz", data_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown dataset"):
        fetch("nope", "x.txt", data_dir=tmp_path)


# ----------------------------------------------------------------------------------------------- her2st
@pytest.fixture(scope="module", params=["B4", "C5"])
def her2st_sdata(request, data_root):
    from stdiff.datasets import her2st

    section = request.param
    base = _require(data_root, HER2ST)
    if section == "B4":  # through the registry / STDIFF_DATA_DIR
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STDIFF_DATA_DIR", str(data_root))
            sdata = her2st(section)
    else:  # explicit dataset folder, no registry
        sdata = her2st(section, data_dir=base)
    return section, sdata


def test_her2st_structure(her2st_sdata):
    section, sdata = her2st_sdata
    assert set(sdata.images) == {"he"} and set(sdata.shapes) == {"spots"} and set(sdata.tables) == {"table"}
    assert sdata.coordinate_systems == ["global"]
    _check_spots_table(sdata, HER2ST_N_SPOTS[section])
    assert sdata["table"].n_vars == HER2ST_N_GENES[section]
    assert np.allclose(sdata["spots"]["radius"], 50.0)
    assert {"array_x", "array_y"} <= set(sdata["table"].obs.columns)

    attrs = sdata.attrs["her2st"]
    assert attrs["section"] == section
    assert 0.66 < attrs["um_per_px"] < 0.72
    assert attrs["spot_pitch_um"] == 200.0 and attrs["spot_diameter_um"] == 100.0

    img = sdata["he"]["scale0"]["image"]
    assert img.dims == ("c", "y", "x") and list(img.coords["c"].values) == ["r", "g", "b"]
    assert img.dtype == np.uint8
    levels = sorted(sdata["he"].keys())
    assert len(levels) == 4
    assert sdata["he"][levels[-1]]["image"].shape[-1] == img.shape[-1] // 8
    np.testing.assert_allclose(_affine_xy(sdata["he"]), np.diag([attrs["um_per_px"], attrs["um_per_px"], 1.0]))

    # neighbouring lattice spots are 200 um apart in the stored (µm) coordinates
    obs = sdata["table"].obs
    xy = sdata["table"].obsm["spatial"]
    key = {(a, b): i for i, (a, b) in enumerate(zip(obs["array_x"], obs["array_y"]))}
    d = [np.linalg.norm(xy[i] - xy[key[(a + 1, b)]]) for (a, b), i in key.items() if (a + 1, b) in key]
    assert len(d) > 50 and abs(np.median(d) - 200.0) < 10.0


def test_her2st_spots_on_tissue(her2st_sdata):
    """Spot centres (µm) mapped back through the image transform land on (darker) tissue."""
    _, sdata = her2st_sdata
    inv = np.linalg.inv(_affine_xy(sdata["he"]))
    spots = sdata["spots"]
    px = np.c_[spots.geometry.x, spots.geometry.y, np.ones(len(spots))] @ inv.T
    img = np.asarray(sdata["he"]["scale0"]["image"].data)  # (3, y, x) uint8
    _, h, w = img.shape
    assert (px[:, 0] > 0).all() and (px[:, 0] < w).all() and (px[:, 1] > 0).all() and (px[:, 1] < h).all()

    r = 25  # px, a disc well inside the 100 µm (~145 px) spot
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = yy**2 + xx**2 <= r * r
    at_spots = np.mean(
        [
            img[:, int(round(y)) - r : int(round(y)) + r + 1, int(round(x)) - r : int(round(x)) + r + 1]
            .mean(0)[disc]
            .mean()
            for x, y, _ in px
        ]
    )
    rng = np.random.default_rng(0)
    cand = rng.uniform([0, 0], [w, h], size=(4000, 2))
    dist = np.min(np.linalg.norm(cand[:, None, :] - px[None, :, :2], axis=-1), axis=1)
    far = cand[dist > 600].astype(int)  # > ~400 µm from any spot
    assert len(far) > 200
    background = img[:, far[:, 1], far[:, 0]].mean()
    assert at_spots < background - 20, (at_spots, background)


def test_her2st_bad_inputs(tmp_path, monkeypatch):
    from stdiff.datasets import her2st

    monkeypatch.delenv("STDIFF_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match="data_dir"):
        her2st("Z9")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "ST-cnts" / "B4.tsv.gz")):
        her2st("B4", data_dir=tmp_path)


def test_her2st_image_lookup_errors(tmp_path, data_root):
    from stdiff.datasets import her2st

    src = _require(data_root, HER2ST)
    for sub in ("ST-cnts/B4.tsv.gz", "ST-spotfiles/B4_selection.tsv"):
        (tmp_path / sub).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / sub).symlink_to(src / sub)
    folder = tmp_path / "ST-imgs" / "B" / "B4"
    with pytest.raises(FileNotFoundError, match="no .jpg"):
        her2st("B4", data_dir=tmp_path)
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.jpg").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"2 \.jpg files"):
        her2st("B4", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------- MERFISH
@pytest.fixture(scope="module")
def merfish_sdata(data_root):
    from stdiff.datasets import merfish_mouse_brain_mini

    return merfish_mouse_brain_mini(data_dir=_require(data_root, MERFISH))


def test_merfish_structure(merfish_sdata):
    sdata = merfish_sdata
    assert set(sdata.images) == {"dapi", "polyT"} and set(sdata.points) == {"transcripts"}
    assert set(sdata.shapes) == {"cells"}
    assert sdata.coordinate_systems == ["global"]
    pts = sdata["transcripts"].compute()
    assert len(pts) == 80343
    assert pts["gene"].dtype == "category" and pts["gene"].nunique() == 559
    assert sdata["transcripts"].attrs["spatialdata_attrs"]["feature_key"] == "gene"
    assert set(pts["global_z"].unique()) == {0, 1}
    assert 6400 < pts["x"].min() and pts["x"].max() < 6901 and 4699 < pts["y"].min() and pts["y"].max() < 5151
    for name, ch in (("dapi", "DAPI"), ("polyT", "polyT")):
        img = sdata[name]["scale0"]["image"]
        assert img.dtype == np.uint8 and img.shape == (1, 4143, 4603)
        assert list(img.coords["c"].values) == [ch]
        m = _affine_xy(sdata[name])
        np.testing.assert_allclose(m @ [0, 0, 1], [6400.029, 4699.967, 1])
        np.testing.assert_allclose(m @ [4603, 4143, 1], [6900.037, 5150.007, 1])
    cells = sdata["cells"]
    assert len(cells) == 498 and cells.is_valid.all()
    assert set(cells.geom_type) <= {"Polygon", "MultiPolygon"}
    b = cells.total_bounds  # y un-negated: same frame as the transcripts
    assert 6390 < b[0] and b[2] < 6910 and 4690 < b[1] and b[3] < 5160


def test_merfish_transcripts_match_dapi(merfish_sdata):
    """Transcript density correlates with DAPI block-averaged to the same µm grid (and not when flipped)."""
    sdata = merfish_sdata
    pts = sdata["transcripts"].compute()
    img = np.asarray(sdata["dapi"]["scale0"]["image"].data)[0].astype(float)
    h, w = img.shape
    m = _affine_xy(sdata["dapi"])
    (x0, y0), (x1, y1) = (m @ [0, 0, 1])[:2], (m @ [w, h, 1])[:2]
    nx, ny = 50, 45
    hist, _, _ = np.histogram2d(pts["y"], pts["x"], bins=[ny, nx], range=[[y0, y1], [x0, x1]])
    # pixel centres -> µm through the transform -> bin
    cx = (m @ np.c_[np.arange(w) + 0.5, np.zeros(w), np.ones(w)].T)[0]
    cy = (m @ np.c_[np.zeros(h), np.arange(h) + 0.5, np.ones(h)].T)[1]
    bx = np.clip(((cx - x0) / (x1 - x0) * nx).astype(int), 0, nx - 1)
    by = np.clip(((cy - y0) / (y1 - y0) * ny).astype(int), 0, ny - 1)
    sums = np.zeros((ny, nx))
    np.add.at(sums, (by[:, None], bx[None, :]), img)
    dapi = sums / (np.bincount(by, minlength=ny)[:, None] * np.bincount(bx, minlength=nx)[None, :])
    r = np.corrcoef(hist.ravel(), dapi.ravel())[0, 1]
    r_flip = np.corrcoef(hist[::-1].ravel(), dapi.ravel())[0, 1]
    assert r > 0.5, r
    assert r_flip < r - 0.25, (r, r_flip)


# ----------------------------------------------------------------------------------------------- Visium
@pytest.fixture(scope="module")
def visium_sdata(data_root):
    from stdiff.datasets import visium_mouse_brain_mini

    _require(data_root, VISIUM)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STDIFF_DATA_DIR", str(data_root))
        return visium_mouse_brain_mini()


def test_visium_structure(visium_sdata):
    sdata = visium_sdata
    assert set(sdata.images) == {"he"} and set(sdata.shapes) == {"spots"} and set(sdata.tables) == {"table"}
    assert sdata.coordinate_systems == ["global"]
    _check_spots_table(sdata, 624)
    table = sdata["table"]
    assert table.n_vars == 634 and int(table.X.sum()) == 738015
    assert (table.obs["in_tissue"] == 1).all()
    assert np.allclose(sdata["spots"]["radius"], 27.5)
    attrs = sdata.attrs["visium"]
    assert attrs["spot_diameter_fullres"] == pytest.approx(89.44476048022638)
    # the scale comes from the lattice (100 µm between neighbours); spot_diameter_fullres spans a 65 µm spot
    assert attrs["um_per_fullres_px"] == pytest.approx(65 / 89.44476048022638, rel=0.02)
    assert sd.spots.detect_geometry(table.obsm["spatial"].T, 27.5).platform == "visium"
    img = sdata["he"]["scale0"]["image"]
    assert img.dtype == np.uint8 and img.shape == (3, 172, 243) and list(img.coords["c"].values) == ["r", "g", "b"]
    # first barcode: locs row 1 = (5477, -4125) full-res px
    k = attrs["um_per_fullres_px"]
    np.testing.assert_allclose(table.obsm["spatial"][0], [5477 * k, 4125 * k])


def test_visium_spots_inside_image(visium_sdata):
    sdata = visium_sdata
    m = _affine_xy(sdata["he"])
    _, h, w = sdata["he"]["scale0"]["image"].shape
    (x0, y0), (x1, y1) = (m @ [0, 0, 1])[:2], (m @ [w, h, 1])[:2]
    k = sdata.attrs["visium"]["um_per_fullres_px"]
    np.testing.assert_allclose([x0, y0, x1, y1], np.array([2000.5, 2380.75, 6790.5, 5730.25]) * k)
    assert 13.5 < (x1 - x0) / w < 15  # ≈14.3 µm per screenshot pixel (100 µm lattice)
    xy = sdata["table"].obsm["spatial"]
    assert (xy[:, 0] > x0).all() and (xy[:, 0] < x1).all() and (xy[:, 1] > y0).all() and (xy[:, 1] < y1).all()


def test_visium_zarr_roundtrip(visium_sdata, tmp_path):
    import spatialdata as sd

    visium_sdata.write(tmp_path / "visium.zarr")
    back = sd.read_zarr(tmp_path / "visium.zarr")
    assert set(back.shapes) == {"spots"} and back["table"].n_obs == 624
    np.testing.assert_allclose(_affine_xy(back["he"]), _affine_xy(visium_sdata["he"]))
    assert list(back["spots"].index) == list(visium_sdata["spots"].index)
