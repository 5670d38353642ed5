"""``stdiff superresolve``: its inputs (zarr, Space Ranger outs/), the default, and refusals before the work."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import spatialdata
from _io_formats import hex_spots, write_visium

import stdiff as sd
from stdiff._cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory, synthetic_small, tiny_model):
    """The synthetic section as a zarr store and the tiny model as a file."""
    folder = tmp_path_factory.mktemp("cli")
    inp, model = folder / "in.zarr", folder / "m.pt"
    spatialdata.deepcopy(synthetic_small).write(inp)
    tiny_model.save(model)
    return inp, model


@pytest.fixture
def no_work(monkeypatch):
    """Make any call of the super-resolution fail the test: refusals must come before it."""

    def forbidden(*args, **kwargs):  # pragma: no cover - reached only when a refusal comes too late
        raise AssertionError("superresolve ran although the command should have been refused before the work")

    monkeypatch.setattr(sd.tl, "superresolve", forbidden)


def _run(*args: str) -> int:
    return main(["superresolve", *map(str, args), "--no-progress"])


def _tree(path) -> dict:
    """Every file under ``path`` with its size (what a refusal must leave as it was)."""
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def test_cli_out_is_refused_before_the_work(store, tmp_path, no_work, caplog):
    inp, model = store
    other = tmp_path / "other.zarr"
    spatialdata.SpatialData(attrs={"mine": 1}).write(other)
    before, before_in = _tree(other), _tree(inp)
    base = [inp, "--model", model, "--counts-key", "hr_counts"]
    cases = {
        "already exists; pass --overwrite": ["--out", other],
        "is the input": ["--out", inp],
        "overlaps the input": ["--out", inp / "images" / "x.zarr"],
        "--key-added 'a b' is not a valid element name": ["--out", tmp_path / "n.zarr", "--key-added", "a b"],
        "--chunk-lr must be at least 1": ["--out", tmp_path / "n.zarr", "--chunk-lr", "0"],
        "--n-samples must be at least 1": ["--out", tmp_path / "n.zarr", "--n-samples", "0"],
        "--hr-um must be a positive": ["--out", tmp_path / "n.zarr", "--hr-um", "-5"],
        "--genes 'EPCAM,' has an empty name": ["--out", tmp_path / "n.zarr", "--genes", "EPCAM,"],
        "own image 'he'": ["--out", tmp_path / "n.zarr", "--key-added", "he"],
        "own image 'hr_counts'": ["--out", tmp_path / "n.zarr", "--key-added", "HR_counts"],
    }
    for message, args in cases.items():
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="stdiff"):
            assert _run(*base, *args) == 2, message
        assert message in caplog.text, caplog.text
    (tmp_path / "file.zarr").write_text("not a store")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("keep")
    for out, message in ((tmp_path / "file.zarr", "is not a zarr store (a file)"),
                         (tmp_path / "folder", "is not a zarr store (a folder)")):  # fmt: skip
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="stdiff"):
            assert _run(*base, "--out", out, "--overwrite") == 2
        assert message in caplog.text
    for args, message in (
        ([tmp_path / "nope.zarr"], "does not exist"),
        ([tmp_path / "folder"], "neither a SpatialData"),
        ([inp, "--visium", inp], "once"),
        ([], "pass the input"),
        ([inp, "--model", tmp_path / "nope.pt"], "--model"),
    ):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="stdiff"):
            assert _run(*args, "--out", tmp_path / "n.zarr") == 2
        assert message in caplog.text, caplog.text
    assert _tree(other) == before and _tree(inp) == before_in and (tmp_path / "folder" / "notes.txt").exists()
    assert not (tmp_path / "n.zarr").exists()


def test_cli_superresolve_overwrite_and_key_added(store, tmp_path, caplog):
    inp, model = store
    out = tmp_path / "out.zarr"
    fast = ["--model", model, "--counts-key", "hr_counts", "--n-samples", "2"]
    base = [inp, *fast, "--genes", "EPCAM,PTPRC", "--chunk-lr", "4"]
    assert _run(*base, "--out", out) == 0
    first = spatialdata.read_zarr(out)
    assert list(first.images["stdiff"].coords["c"].values) == ["EPCAM", "PTPRC"] and "stdiff_std" in first.images
    assert {"he", "hr_counts"} <= set(first.images)  # the input's own elements are kept
    # the result as the input: its own result is refused without --overwrite, replaced with it
    out2 = tmp_path / "out2.zarr"
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="stdiff"):
        assert _run(out, "--model", model, "--counts-key", "hr_counts", "--out", out2) == 2
    assert "already holds the stdiff result 'stdiff'" in caplog.text and not out2.exists()
    assert _run(out, *fast, "--genes", "EPCAM", "--out", out2, "--overwrite") == 0
    second = spatialdata.read_zarr(out2)
    assert list(second.images["stdiff"].coords["c"].values) == ["EPCAM"]
    # stdiff's own refusals during the work: a clear message, exit code 1, nothing written
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="stdiff"):
        assert _run(inp, "--model", model, "--genes", "NOPE", "--out", tmp_path / "x.zarr") == 1
    assert "NOPE" in caplog.text and "Traceback" not in caplog.text and not (tmp_path / "x.zarr").exists()
    # --overwrite replaces an existing store, with a result under another name
    assert _run(*base, "--out", out2, "--overwrite", "--key-added", "sr") == 0
    third = spatialdata.read_zarr(out2)
    assert "sr" in third.images and "stdiff" not in third.images and "sr" in third.attrs["stdiff"]


def test_cli_default_and_visium_folder(tmp_path, monkeypatch):
    """No --model runs the default (model=None) with --hr-um; a Space Ranger folder is read as it is."""
    s = sd.datasets.synthetic_tissue(size_um=600, n_genes=4, seed=2, he_um=1.0)
    spots, counts, genes = hex_spots(s)
    rgb = np.asarray(s.images["he"]["scale0"].ds["image"].data).transpose(1, 2, 0)
    outs = write_visium(tmp_path / "sample" / "outs", rgb, spots, counts, genes, um_per_px=1.0, counts_format="mtx")
    calls = []

    def record(sdata, genes=None, **kwargs):  # the call the CLI makes, on the SpatialData it read
        calls.append(kwargs)
        sdata.images[kwargs["key_added"]] = next(iter(sdata.images.values()))
        sdata.attrs["stdiff"] = {kwargs["key_added"]: {"genes": genes}}

    monkeypatch.setattr(sd.tl, "superresolve", record)
    out = tmp_path / "r.zarr"
    assert _run(outs, "--fullres-image", "fullres.tif", "--hr-um", "20", "--out", out) == 0
    assert calls[-1]["model"] is None and calls[-1]["hr_um"] == 20.0 and calls[-1]["chunk_lr"] is None
    assert calls[-1]["quantiles"] is None
    back = spatialdata.read_zarr(out)
    assert {"sample_full_image", "stdiff", "sample"} <= set(back.images) | set(back.shapes)
    assert "sample_um" in back.coordinate_systems
    assert _run("--visium", outs.parent, "--out", tmp_path / "r2.zarr", "--dataset-id", "s1") == 0
    assert "s1_um" in spatialdata.read_zarr(tmp_path / "r2.zarr").coordinate_systems
    for args in (["--fullres-image", "nope.tif"], ["--dataset-id", "a b"], ["--visium", tmp_path]):
        assert _run(outs, *args, "--out", tmp_path / "r3.zarr") == 2
    assert len(calls) == 2 and not (tmp_path / "r3.zarr").exists()
    # --quantiles: comma-separated levels go to superresolve as they are (it checks their range)
    assert _run(outs, "--quantiles", "0.05,0.95", "--out", tmp_path / "q.zarr") == 0
    assert calls[-1]["quantiles"] == [0.05, 0.95]
    with pytest.raises(SystemExit):
        _run(outs, "--quantiles", "5%", "--out", tmp_path / "q2.zarr")
    assert len(calls) == 3 and not (tmp_path / "q2.zarr").exists()
