"""Test helpers: spot sections built from synthetic truth, and snapshots of a SpatialData."""

from __future__ import annotations

import numpy as np
import pandas as pd


def spot_counts(sdata, *, pitch_um: float = 100.0, radius_um: float = 27.5, margin_um: float = 50.0):
    """Visium-like spots on a square lattice: the sum of the synthetic truth bins inside each spot.

    Returns ``(centres_um (n, 2) as x, y, counts (n, G) int, genes, lattice (n, 2) as row, col)``.
    """
    el = sdata.images["hr_counts"]
    counts = np.asarray(el.data)
    genes = [str(g) for g in el.coords["c"].values]
    from spatialdata.transformations import get_transformation

    bin_um = float(get_transformation(el).to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))[0, 0])
    _, H, W = counts.shape
    ys = np.arange(margin_um, H * bin_um - margin_um + 1e-9, pitch_um)
    xs = np.arange(margin_um, W * bin_um - margin_um + 1e-9, pitch_um)
    yy, xx = np.meshgrid((np.arange(H) + 0.5) * bin_um, (np.arange(W) + 0.5) * bin_um, indexing="ij")
    centres, rows, values = [], [], []
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            inside = (yy - y) ** 2 + (xx - x) ** 2 <= radius_um**2
            centres.append((x, y))
            rows.append((i, j))
            values.append(counts[:, inside].sum(1))
    return np.asarray(centres, float), np.rint(np.asarray(values)).astype(np.int64), genes, np.asarray(rows)


def spots_section(sdata, *, pitch_um: float = 100.0, radius_um: float = 27.5, **kwargs):
    """A spots-only SpatialData (``he``, ``spots``, ``table``) in µm from a synthetic section."""
    import stdiff as sd

    centres, counts, genes, _ = spot_counts(sdata, pitch_um=pitch_um, radius_um=radius_um)
    ids = [f"spot{i}" for i in range(len(centres))]
    return sd.io.from_spots(counts, centres, sdata.images["he"], genes=genes, spot_ids=ids, units="um",
                            spot_diameter_um=2 * radius_um, **kwargs)  # fmt: skip


def _dense(X) -> np.ndarray:
    return X.toarray() if hasattr(X, "toarray") else np.array(X, copy=True)


def snapshot(sdata) -> dict:
    """Element keys, every element's transformations (as matrices), table contents and attrs."""
    import copy

    from spatialdata.transformations import get_transformation

    snap = {"keys": {k: sorted(getattr(sdata, k)) for k in ("images", "labels", "points", "shapes", "tables")}}
    tf = {}
    for _, name, el in sdata.gen_spatial_elements():
        tf[name] = {
            cs: np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")))
            for cs, t in get_transformation(el, get_all=True).items()
        }
    snap["transformations"] = tf
    tables = {}
    for name, t in sdata.tables.items():
        X = t.X.toarray() if hasattr(t.X, "toarray") else np.asarray(t.X)
        tables[name] = (
            X.copy(),
            t.obs.copy(),
            list(t.var_names),
            {k: _dense(v) for k, v in t.layers.items()},
        )
    snap["tables"] = tables
    snap["attrs"] = copy.deepcopy(dict(sdata.attrs or {}))
    return snap


def assert_unchanged(before: dict, sdata) -> None:
    """Assert that ``sdata`` matches a :func:`snapshot` taken before."""
    after = snapshot(sdata)
    assert after["keys"] == before["keys"]
    assert after["tables"].keys() == before["tables"].keys()
    for name, (X, obs, var, layers) in before["tables"].items():
        X2, obs2, var2, layers2 = after["tables"][name]
        np.testing.assert_array_equal(X2, X)
        pd.testing.assert_frame_equal(obs2, obs)
        assert var2 == var and layers2.keys() == layers.keys()
        for k in layers:
            np.testing.assert_array_equal(layers2[k], layers[k])
    assert after["transformations"].keys() == before["transformations"].keys()
    for name, tfs in before["transformations"].items():
        assert after["transformations"][name].keys() == tfs.keys(), name
        for cs, m in tfs.items():
            np.testing.assert_allclose(after["transformations"][name][cs], m)
    assert after["attrs"].keys() == before["attrs"].keys()
