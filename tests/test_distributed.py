"""A cohort on dask.distributed: one task per section, each reading, super-resolving and writing zarr."""

from __future__ import annotations

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")


def superresolve_file(path_in: str, path_out: str, model_path: str, threads: int = 1) -> dict:
    """One section of a cohort: read, super-resolve (chunk by chunk), write (streamed)."""
    import spatialdata
    import torch

    import stdiff as sd

    torch.set_num_threads(threads)  # one worker thread → one torch thread (no oversubscription)
    sdata = spatialdata.read_zarr(path_in)
    sd.tl.superresolve(sdata, model=model_path, counts_key="hr_counts", progress=False, device="cpu")
    sdata.write(path_out, overwrite=True)
    return {"path": path_out, "model_hash": sdata.attrs["stdiff"]["stdiff"]["model_hash"]}


def _img(sdata, key="stdiff") -> np.ndarray:
    el = sdata.images[key]
    return np.asarray(el["scale0"].ds["image"].data if hasattr(el, "children") and len(el.children) else el.data)


def test_superresolve_on_a_local_cluster(tiny_model, tmp_path):
    import spatialdata
    from dask.distributed import Client, LocalCluster

    import stdiff as sd

    model_path = str(tiny_model.save(tmp_path / "model.pt"))
    inputs, outputs = [], []
    for i in range(2):
        s = sd.datasets.synthetic_tissue(size_um=600, n_genes=8, seed=10 + i)
        inputs.append(str(tmp_path / f"section{i}.zarr"))
        outputs.append(str(tmp_path / f"section{i}_stdiff.zarr"))
        s.write(inputs[-1])
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        futures = client.map(superresolve_file, inputs, outputs, model_path=model_path, pure=False)
        results = client.gather(futures)
    assert [r["path"] for r in results] == outputs
    for path_in, r in zip(inputs, results, strict=True):
        out = spatialdata.read_zarr(r["path"])
        assert r["model_hash"] == tiny_model.model_hash()
        assert _img(out).shape == (8, 30, 30)  # 600 µm at 20 µm
        # the same as running it here
        here = spatialdata.read_zarr(path_in)
        sd.tl.superresolve(here, model=tiny_model, counts_key="hr_counts", progress=False, device="cpu")
        np.testing.assert_allclose(_img(out), _img(here), rtol=1e-5, atol=1e-5)
