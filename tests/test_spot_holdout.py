"""Checking a result against spots: sd.tl.measure, the spot hold-out track and the gap/spot index."""

from __future__ import annotations

import numpy as np
import pytest

import stdiff as sd
from _sdata_helpers import spots_section


@pytest.fixture(scope="module")
def spots_sdata(synthetic_small):
    return spots_section(synthetic_small)


def test_measure_reads_a_result_under_its_spots(spots_sdata):
    import spatialdata

    s = spatialdata.deepcopy(spots_sdata)
    genes = list(s.tables["table"].var_names[:3])
    sd.tl.superresolve(s, genes, progress=False)
    a = sd.tl.measure(s)
    t = s.tables["table"]
    assert a.shape == (t.n_obs, 3) and list(a.var_names) == genes
    assert (a.obs["fraction"] > 0.99).all() and a.obsm["spatial"].shape == (t.n_obs, 2)
    # the same numbers as the footprint operator on the result's own grid
    sec = sd.tl.section_of(s)
    mean = np.asarray(s.images["stdiff"]["scale0"]["image"] if hasattr(s.images["stdiff"], "keys") else s.images["stdiff"])
    np.testing.assert_allclose(a.X.T, sec.footprints().measure(mean), rtol=1e-4)
    # the sd of a sum is at least its counting noise, and the prediction follows the measured counts
    assert (a.layers["std"] >= np.sqrt(a.X) * 0.999).all()
    y = np.asarray(t[:, genes].X.toarray() if hasattr(t.X, "toarray") else t[:, genes].X)
    r = [np.corrcoef(np.log1p(a.X[:, g]), np.log1p(y[:, g]))[0, 1] for g in range(3)]
    assert np.mean(r) > 0.5
    with pytest.raises(KeyError, match="No shapes element"):
        sd.tl.measure(s, shapes_key="nope")
    with pytest.raises(KeyError, match="not in result"):
        sd.tl.measure(s, genes=["NOPE"])


def test_spot_holdout_track_scores_every_method_on_hidden_spots(spots_sdata):
    from stdiff.benchmark._holdout import run_section
    from stdiff.benchmark._holdout_run import holdout_markdown, pick_genes

    genes = pick_genes(spots_sdata.tables["table"], 3)
    methods = ["nearest_spot", "nearest6", "kernel", "tesla_like", "default_no_histology", "default"]
    res = run_section(spots_sdata, genes, "table", methods=methods, seeds=[0], folds=5)
    for m in methods:
        e = res[m]
        assert np.isfinite(e["pcc"]) and e["deviance"] > 0 and 0 <= e["zero_px"] <= 1, (m, e)
    # only the models with a spread have an interval coverage; the default leaves no hole in a hidden disc
    assert np.isnan(res["nearest6"]["cov90"]) and 0.6 <= res["default"]["cov90"] <= 1.0
    assert res["default"]["zero_px"] == 0.0
    report = {"dataset": "test", "command": "", "folds": 5, "seeds": [0], "methods": methods, "gene_rule": "counts",
              "sections": {"s": {"genes": genes, "n_spots": 1, "methods": res}}}  # fmt: skip
    md = holdout_markdown(report)
    assert "| default |" in md and "nearest6" in md
    # the spots table must not be touched
    assert spots_sdata.tables["table"].n_obs == len(spots_sdata.shapes["spots"])


def test_gap_spot_index_sees_a_lattice(synthetic_small):
    from stdiff.benchmark._metrics import gap_spot_ratio

    sec = sd.pp.rasterize(synthetic_small, counts_key="hr_counts", lr_um=100, factor=10, he_scale=1)
    sim = sd.pp.simulate_platform(sec, "visium", seed=0)
    fp = sim.footprints()
    smooth = np.broadcast_to(sim.footprints().render(), sim.hr.shape).copy()
    d, nearest = fp.nearest()
    # a map flat on each spot's Voronoi cell changes only between cells: far above the smooth map's ratio
    flat = sim.spots.counts[:, nearest] / fp.full_area_px[nearest][None]
    assert gap_spot_ratio(flat, sim) > 2 * gap_spot_ratio(smooth, sim)
    assert np.isnan(gap_spot_ratio(sim.hr, sec))  # no spots
