"""Chunked inference: chunks with halos blend into the whole-section result; output is lazy and streams to zarr."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import spatialdata

import stdiff as sd
from stdiff.pp._input import open_input
from stdiff.tl._stream import plan_chunks, predict_streamed


class LocalModel:
    """A stand-in model whose prediction is local: each HR pixel gets its LR pixel's counts / f² on tissue."""

    def __init__(self, genes, factor=5, tile_lr=4):
        self.genes, self.factor = list(genes), factor
        self.config = SimpleNamespace(tile_lr=tile_lr, sampler=SimpleNamespace(n_samples=2))
        self.calls = []

    def predict_section(self, section, *, seed=0, progress=False, **kwargs):
        self.calls.append(section)
        f = self.factor
        up = np.kron(section.lr / f**2, np.ones((f, f), np.float32)) * section.mask_hr
        return {"mean": up.astype(np.float32), "std": (0.1 * up + section.mask_hr).astype(np.float32)}


def test_plan_chunks_cover_once():
    chunks = plan_chunks((11, 7), 4, 2)
    seen = np.zeros((11, 7), int)
    for rows, cols, prow, pcol in chunks:
        seen[rows, cols] += 1
        assert prow.start == max(0, rows.start - 2) and pcol.stop == min(7, cols.stop + 2)
    assert (seen == 1).all()


@pytest.mark.parametrize("chunk_lr", [2, 3, 4, 100])
def test_chunks_blend_to_the_whole_section(sdata, chunk_lr):
    inp = open_input(sdata, counts_key="hr_counts", lr_um=100, factor=5, he_scale=2)
    model = LocalModel(inp.genes)
    mean, std = predict_streamed(model, inp, out_genes=inp.genes[:3], chunk_lr=chunk_lr, progress=False)
    whole = LocalModel(inp.genes).predict_section(inp.section())
    np.testing.assert_allclose(mean.compute(), whole["mean"][:3], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std.compute(), whole["std"][:3], rtol=1e-6, atol=1e-6)
    # each call sees its chunk plus the halo only, histology included
    h, w = inp.shape_lr
    for s in model.calls:
        assert s.shape_lr[0] <= min(h, chunk_lr + 4) and s.he.shape[-1] == s.shape_lr[1] * 5 * 2
    assert len(model.calls) == len(plan_chunks((h, w), chunk_lr, 2))


def test_superresolve_in_chunks_conserves_counts_and_streams_to_zarr(sdata, tiny_model, tmp_path):
    sd.tl.superresolve(
        sdata, model=tiny_model, counts_key="hr_counts", chunk_lr=4, conserve_counts=True, progress=False
    )
    el = sdata.images["stdiff"]
    data = el["scale0"].ds["image"].data if hasattr(el, "children") and len(el.children) else el.data
    assert hasattr(data, "dask")  # lazy: written chunk by chunk
    mean = np.asarray(data)
    sec = sd.tl.section_of(sdata)
    blocks = sd.pp.aggregate(mean, 5)
    np.testing.assert_allclose(blocks, sec.lr * sec.mask_lr, rtol=1e-4, atol=1e-3)
    # same seed, same chunks → same result
    again = sd.tl.superresolve(
        sdata, model=tiny_model, counts_key="hr_counts", chunk_lr=4, conserve_counts=True, progress=False, copy=True
    )
    np.testing.assert_array_equal(np.asarray(again.images["stdiff"].data), mean)
    sdata.write(tmp_path / "out.zarr")
    back = spatialdata.read_zarr(tmp_path / "out.zarr")
    el2 = back.images["stdiff"]
    data2 = el2["scale0"].ds["image"].data if hasattr(el2, "children") and len(el2.children) else el2.data
    np.testing.assert_array_equal(np.asarray(data2), mean)
