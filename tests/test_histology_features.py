"""Histology features: nuclei, stain, alignment, caching, non-RGB images, embeddings, real her2st."""

from __future__ import annotations

import numpy as np
import pytest

import stdiff as sd
from stdiff.pp import Section, _histology

HE_UM, HR_UM, S = 0.5, 20.0, 40  # 40 image pixels per 20 µm HR pixel
RADIUS_UM = 4.0  # nucleus radius: area ≈ 50 µm², the default reference nucleus
PINK, PURPLE = (232, 160, 200), (70, 40, 125)


def _section(he: np.ndarray, *, factor: int = 2) -> Section:
    H, W = he.shape[1] // S, he.shape[2] // S
    return Section(
        genes=["g"],
        lr=np.ones((1, H // factor, W // factor), np.float32),
        hr=None,
        he=he,
        mask_lr=np.ones((H // factor, W // factor), bool),
        mask_hr=np.ones((H, W), bool),
        origin=(0.0, 0.0),
        lr_um=HR_UM * factor,
        factor=factor,
        he_scale=S,
        coordinate_system="global",
    )


def _draw(centres_um, shape_hr=(4, 4), radius_um=RADIUS_UM) -> np.ndarray:
    """A pink image with dark purple discs at ``centres_um`` (y, x), ``(3, Y, X)`` uint8."""
    Y, X = shape_hr[0] * S, shape_hr[1] * S
    img = np.empty((3, Y, X), np.uint8)
    img[:] = np.array(PINK, np.uint8)[:, None, None]
    yy, xx = (np.indices((Y, X)) + 0.5) * HE_UM
    for cy, cx in centres_um:
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius_um**2
        img[:, disc] = np.array(PURPLE, np.uint8)[:, None]
    return img


def _layout(seed: int = 0, shape_hr=(4, 4)):
    """Non-touching nuclei fully inside their HR pixel; returns centres and the true count per pixel."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, size=shape_hr)
    slots = [(5.0, 5.0), (5.0, 15.0), (15.0, 5.0), (15.0, 15.0)]  # 10 µm apart, radius 4 µm
    centres = []
    for i, j in np.ndindex(*shape_hr):
        for k in rng.choice(4, size=counts[i, j], replace=False):
            centres.append((i * HR_UM + slots[k][0], j * HR_UM + slots[k][1]))
    return centres, counts


def _feature(f, name):
    return f.values[f.names.index(name)]


def test_nuclear_count_size_and_stain():
    centres, counts = _layout()
    f = sd.pp.histology_features(_section(_draw(centres)))
    assert f.values.shape == (len(f.names), 4, 4) and f.values.dtype == np.float32
    assert len(set(f.names)) == len(f.names) and all(np.isfinite(f.values).ravel())
    n = _feature(f, "nuclei_per_100um2@cell") * HR_UM**2 / 100.0
    assert np.all(np.abs(n - counts) <= 1.0)
    np.testing.assert_allclose(n, counts, atol=1e-5)  # non-touching nuclei are counted exactly
    area = _feature(f, "nuclear_area_um2@cell")
    true_area = np.pi * RADIUS_UM**2
    assert np.all(np.abs(area[counts > 0] - true_area) <= 0.2 * true_area)
    assert np.all(area[counts == 0] == 0)
    ecc = _feature(f, "nuclear_eccentricity@cell")
    assert np.all(ecc[counts > 0] < 0.4)  # round discs
    h = _feature(f, "h_od_mean@cell")
    e = _feature(f, "e_od_mean@cell")
    assert h[counts == 3].min() > h[counts == 0].max()  # haematoxylin rises with nuclei
    assert e[counts == 0].mean() > 0  # eosin on the pink background
    frac = _feature(f, "nuclear_fraction@cell")
    np.testing.assert_allclose(frac, counts * true_area / HR_UM**2, rtol=0.1, atol=1e-6)


def test_touching_nuclei_split_by_area():
    f = sd.pp.histology_features(_section(_draw([(10.0, 6.0), (10.0, 13.0)], shape_hr=(2, 2))))
    n = _feature(f, "nuclei_per_100um2@cell") * HR_UM**2 / 100.0
    assert abs(n[0, 0] - 2) <= 0.5 and np.all(n.ravel()[1:] == 0)


@pytest.mark.parametrize("pixel", [(0, 0), (1, 2), (3, 3)])
def test_alignment_single_nucleus(pixel):
    i, j = pixel
    f = sd.pp.histology_features(_section(_draw([(i * HR_UM + 10.0, j * HR_UM + 10.0)])))
    for name in ("nuclei_per_100um2@cell", "nuclear_fraction@cell", "h_od_mean@cell"):
        v = _feature(f, name)
        others = np.delete(v.ravel(), i * 4 + j)
        assert v[i, j] > others.max() + 1e-3, name
    n = _feature(f, "nuclei_per_100um2@cell")
    assert np.count_nonzero(n) == 1
    smooth = _feature(f, "nuclei_per_100um2@100um")  # the tissue scale spreads it around (i, j)
    assert np.unravel_index(np.argmax(smooth), smooth.shape) == (i, j) and np.count_nonzero(smooth) > 1


def test_cache_returns_same_object(monkeypatch):
    section = _section(_draw(_layout(1)[0]))
    calls = []
    real = _histology._rgb_features
    monkeypatch.setattr(_histology, "_rgb_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    f1 = sd.pp.histology_features(section)
    f2 = sd.pp.histology_features(section)
    assert f1 is f2 and len(calls) == 1
    f3 = sd.pp.histology_features(section, scales_um=(None,))  # other options: recomputed
    assert len(calls) == 2 and f3.values.shape[0] == f1.values.shape[0] // 2
    section.he = section.he.copy()
    section.he[:, :S, :S] = 0  # a different image is not served from the cache
    sd.pp.histology_features(section)
    assert len(calls) == 3
    sd.pp.histology_features(section, cache=False)
    assert len(calls) == 4


def test_non_rgb_image():
    rng = np.random.default_rng(0)
    dapi = rng.integers(0, 500, size=(2, 4 * S, 4 * S)).astype(np.uint16)
    dapi[0, S : 2 * S, S : 2 * S] = 60000  # a bright block in HR pixel (1, 1)
    f = sd.pp.histology_features(_section(dapi))
    assert not any(n.startswith(("h_od", "e_od")) for n in f.names)
    assert "ch1_mean@cell" in f.names and np.isfinite(f.values).all()
    m = _feature(f, "ch0_mean@cell")
    assert np.argmax(m) == 5 and _feature(f, "ch0_bright_fraction@cell")[1, 1] == 1.0


def test_embeddings_hook_and_scaler():
    section = _section(_draw(_layout(2)[0]))
    base = sd.pp.histology_features(section)
    emb = np.arange(2 * 16, dtype=np.float32).reshape(2, 4, 4)
    f = sd.pp.histology_features(section, embeddings=emb)
    assert f.names[-2:] == ["emb0", "emb1"] and np.array_equal(f.values[-2:], emb)
    assert sd.pp.histology_features(section) is base  # the cached base is untouched

    def mean_red(tile):
        assert tile.shape == (3, S, S) and tile.dtype == np.uint8
        return np.array([tile[0].mean()])

    g = sd.pp.histology_features(section, embeddings=mean_red)
    red = section.he[0].reshape(4, S, 4, S).mean(axis=(1, 3))
    np.testing.assert_allclose(g.values[-1], red, rtol=1e-5)
    wide = sd.pp.histology_features(section, embeddings=lambda t: np.array([t.shape[-1]]), embedding_patch_um=50)
    assert np.all(wide.values[-1] == 100)
    with pytest.raises(ValueError, match="embeddings"):
        sd.pp.histology_features(section, embeddings=np.zeros((2, 3, 3)))
    mean, sdv = sd.pp.fit_feature_scaler([base, f.values[: len(base)]])
    z = sd.pp.standardize_features(base, mean, sdv, clip=None)
    assert z.shape == base.values.shape
    varying = base.values.reshape(len(base), -1).std(1) > 1e-3
    np.testing.assert_allclose(z[varying].mean(axis=(1, 2)), 0, atol=1e-4)
    assert np.abs(sd.pp.standardize_features(base, mean, sdv * 0 + 1e-3)).max() <= 5.0


def test_her2st_features_transfer(her2st_dir):
    """B4 ↔ C5: ridge on the features vs on colour means, spot level (reported, robust assertions only)."""
    from sklearn.linear_model import Ridge

    from stdiff.datasets import her2st

    sections = {}
    for name in ("B4", "C5"):
        sdata = her2st(name, data_dir=her2st_dir)
        table = sdata["table"]
        genes = list(table.var_names[np.argsort(-np.asarray(table.X.sum(0)).ravel())[:200]])
        sections[name] = (sdata, genes)
    genes = [g for g in sections["B4"][1] if g in set(sections["C5"][1])][:20]
    secs = {
        n: sd.pp.rasterize(s, genes, table_key="table", spots_as="hr", lr_um=400, factor=2, he_um=6.25)
        for n, (s, _) in sections.items()
    }
    feats = {id(s): sd.pp.histology_features(s, scales_um=(None, 400.0)) for s in secs.values()}
    for f in feats.values():
        v = f.values[:, f.mask]
        assert np.isfinite(v).all() and (v.std(1) > 0).sum() >= len(f.names) - 2

    def score(design):
        out = []
        for tr, te in (("B4", "C5"), ("C5", "B4")):
            a, b = secs[tr], secs[te]
            norm = sd.pp.fit_normalizer([a])
            mean, sdv = sd.pp.fit_feature_scaler([design(a)], masks=[a.truth_mask])
            x = sd.pp.standardize_features(design(a), mean, sdv)[:, a.truth_mask].T
            xt = sd.pp.standardize_features(design(b), mean, sdv)[:, b.truth_mask].T
            y, yt = (norm.transform(s.hr)[:, s.truth_mask].T for s in (a, b))
            p = Ridge(alpha=10.0).fit(x, y).predict(xt)
            out.append(np.nanmean([np.corrcoef(p[:, g], yt[:, g])[0, 1] for g in range(len(genes))]))
        return float(np.mean(out))

    r_feat = score(lambda s: feats[id(s)].values)
    r_col = score(_colour)
    print(f"her2st B4<->C5 ridge PCC: features {r_feat:.3f}, colour means {r_col:.3f}")
    assert np.isfinite(r_feat) and np.isfinite(r_col) and r_feat > 0


def _colour(s: Section) -> np.ndarray:
    H, W = s.mask_hr.shape
    k = s.he_scale
    return s.he.astype(np.float32).reshape(3, H, k, W, k).mean(axis=(2, 4)) / 255.0
