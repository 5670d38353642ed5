"""Aggregation-consistency model: loss minimum, mass conservation, recovery of a toy pattern, seeds."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import stdiff as sd  # noqa: E402
from stdiff.benchmark._metrics import pcc  # noqa: E402
from stdiff.models._measurements import distribute  # noqa: E402
from stdiff.models.aggregation_consistency import AggregationConsistency  # noqa: E402
from stdiff.models.nn.losses import poisson_deviance  # noqa: E402
from stdiff.pp import Section  # noqa: E402

HE_UM, HR_UM, S, FACTOR = 1.0, 20.0, 20, 3
SLOTS = ((5.0, 5.0), (5.0, 15.0), (15.0, 5.0), (15.0, 15.0))


def _toy(seed: int = 0, shape_hr=(24, 24)) -> tuple[Section, np.ndarray]:
    """Nuclei per HR pixel 0–3 drawn on H&E; gene 0 rises and gene 1 falls with the count."""
    rng = np.random.default_rng(seed)
    H, W = shape_hr
    counts = rng.integers(0, 4, size=shape_hr)
    img = np.empty((3, H * S, W * S), np.uint8)
    img[:] = np.array((232, 160, 200), np.uint8)[:, None, None]
    yy, xx = (np.indices((S, S)) + 0.5) * HE_UM
    for i, j in np.ndindex(H, W):
        tile = img[:, i * S : (i + 1) * S, j * S : (j + 1) * S]
        for k in rng.choice(4, size=counts[i, j], replace=False):
            disc = (yy - SLOTS[k][0]) ** 2 + (xx - SLOTS[k][1]) ** 2 <= 16.0
            tile[:, disc] = np.array((70, 40, 125), np.uint8)[:, None]
    hr = np.stack([10.0 * counts + 1.0, 10.0 * (3 - counts) + 1.0, np.full(shape_hr, 5.0)]).astype(np.float32)
    mask_hr = np.ones(shape_hr, bool)
    mask_hr[:FACTOR, :FACTOR] = False  # one LR pixel without tissue
    mask_hr[-1, :] = False  # blocks that are partly tissue
    hr *= mask_hr
    section = Section(
        genes=["up", "down", "flat"],
        lr=sd.pp.aggregate(hr, FACTOR),
        hr=hr,
        he=img,
        mask_lr=sd.pp.aggregate(mask_hr.astype(np.int32), FACTOR) > 0,
        mask_hr=mask_hr,
        origin=(0.0, 0.0),
        lr_um=HR_UM * FACTOR,
        factor=FACTOR,
        he_scale=S,
        coordinate_system="global",
    )
    return section, counts


@pytest.fixture(scope="module")
def toy():
    return _toy()


@pytest.fixture(scope="module")
def fitted(toy):
    section, _ = toy
    return AggregationConsistency(hidden=16, scales_um=(None,)).fit([section], seed=0, max_steps=150, max_time=5)


def test_loss_minimum_at_exact_sums():
    y = torch.tensor([[0.0, 3.0, 10.0], [1.0, 0.0, 7.0]])
    w = torch.tensor([1.0, 0.5])
    assert float(poisson_deviance(y.clone(), y, w)) == pytest.approx(0.0, abs=1e-6)
    for delta in (0.9, 1.1):
        assert float(poisson_deviance(y * delta + 0.01, y, w)) > 0


def test_distribute_conserves_mass():
    rng = np.random.default_rng(0)
    lr = rng.poisson(20, size=(2, 3, 3)).astype(np.float32)
    mask = rng.random((6, 6)) > 0.3
    mask[:2, :2] = False  # a block without tissue gets nothing
    w = rng.random((2, 6, 6))
    w[0, 2:4, 2:4] = 0.0  # zero weights in a block: even split
    out = distribute(lr, w, mask, 2)
    assert np.all(out[:, ~mask] == 0)
    tissue = sd.pp.aggregate(mask.astype(int), 2) > 0
    np.testing.assert_allclose(sd.pp.aggregate(out, 2)[:, tissue], lr[:, tissue], rtol=1e-5)
    np.testing.assert_allclose(out[0, 2:4, 2:4][mask[2:4, 2:4]], lr[0, 1, 1] / mask[2:4, 2:4].sum(), rtol=1e-5)


def test_predictions_conserve_mass(toy, fitted):
    section, _ = toy
    tissue = section.mask_lr & (sd.pp.aggregate(section.mask_hr.astype(int), FACTOR) > 0)
    for blend in (None, 0.0, 0.4, 1.0):
        out = fitted.predict(section, blend=blend)
        mean = out["mean"]
        assert mean.shape == section.hr.shape and np.all(mean >= 0) and np.all(mean[:, ~section.mask_hr] == 0)
        agg = sd.pp.aggregate(mean.astype(np.float64), FACTOR)
        np.testing.assert_allclose(agg[:, tissue], section.lr[:, tissue], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        fitted.predict(section, blend=1.0)["mean"], sd.pp.lr_per_tissue_pixel(section), rtol=1e-5
    )
    z = fitted.predict(section, normalizer=sd.pp.fit_normalizer([section]))["z_mean"]
    assert z.shape == section.hr.shape and np.isfinite(z).all()


def test_recovers_within_spot_pattern(toy, fitted):
    section, _ = toy
    norm = sd.pp.fit_normalizer([section])
    truth = norm.transform(section.hr)
    mask = section.truth_mask
    model = pcc(norm.transform(fitted.predict(section, blend=0.0)["mean"]), truth, mask)[:2]
    uniform = pcc(norm.transform(sd.pp.lr_per_tissue_pixel(section)), truth, mask)[:2]
    assert np.all(model > uniform + 0.1) and np.all(model > 0.9), (model, uniform)
    assert fitted.history and len(fitted.history[0]) == 3  # (step, train loss, held-out loss)
    assert 0.0 <= fitted.blend_weight <= 1.0 and fitted.blend_scores


def test_saved_and_loaded_through_the_shared_base(toy, fitted, tmp_path):
    section, _ = toy
    back = AggregationConsistency.load(fitted.save(tmp_path / "ac.pt"))
    np.testing.assert_array_equal(back.predict(section)["mean"], fitted.predict(section)["mean"])
    assert back.model_hash() == fitted.model_hash() and back.blend_weight == fitted.blend_weight
    back.blend_weight = 1.0 - fitted.blend_weight
    assert back.model_hash() != fitted.model_hash()
    with pytest.raises(ValueError, match="not a stdiff DiffST model.*aggregation-consistency"):
        sd.models.DiffST.load(tmp_path / "ac.pt")


def test_seeds_repeatable(toy):
    section, _ = toy
    kw = {"hidden": 8, "scales_um": (None,)}
    fit = lambda seed: AggregationConsistency(**kw).fit([section], seed=seed, max_steps=40, max_time=10)
    a, b, c = fit(0), fit(0), fit(1)
    np.testing.assert_array_equal(a.predict(section)["mean"], b.predict(section)["mean"])
    assert a.history == b.history
    assert not np.array_equal(a.predict(section)["histology"], c.predict(section)["histology"])
