"""Adversarial inputs against the public API, tried as a new user would: what does each one get?

Runs every case below against ``stdiff.io.from_spots``, ``read_st``, ``read_spots_table`` and
``stdiff.tl.superresolve`` (with a tiny trained model, so that a case takes seconds) and prints one
row per case and the totals. Outcomes:

- ``clear``: an error raised by stdiff whose message names what was passed and the fix (the case's
  pattern);
- ``unclear``: an error raised by stdiff that does not (or that points the wrong way);
- ``crash``: an exception from inside a library (numpy, pandas, scipy, spatialdata, …) or a
  programming error (``ZeroDivisionError``, ``IndexError``…) reaching the user raw;
- ``silent``: no error but a wrong result; ``lost``: no error but the user's data replaced or zeroed;
- ``hang``: over the case's time limit;
- ``ok``: a valid input with the right result.

For every error the table also says whether the SpatialData was left unchanged and whether the
error came after the work (a prediction or a fit had started). Run it on two commits to compare::

    python benchmarks/adversarial.py --json before.json     # e.g. in a worktree of the base commit
    python benchmarks/adversarial.py --json after.json

(``PYTHONPATH=src`` to run a checkout without installing it.)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import logging
import re
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

OURS = (ValueError, KeyError, TypeError, FileNotFoundError)


@dataclass
class Case:
    """One input: ``run(ctx)`` returns what the user gets; ``check(result, ctx)`` says whether it is right."""

    name: str
    category: str
    run: Callable[[dict], Any]
    expect: str = "error"  # "error" or "ok"
    clear: str = ""  # regex the message of a clear error matches
    check: Callable[[Any, dict], bool] | None = None
    wrong: str = "silent"  # outcome of a wrong result: "silent" or "lost"
    target: str | None = None  # ctx key of the SpatialData the case hands to stdiff (checked unchanged on error)
    limit_s: int = 120


@dataclass
class Outcome:
    name: str
    category: str
    outcome: str
    seconds: float
    unchanged: bool | None = None
    after_work: bool | None = None
    message: str = ""
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- data


def spot_counts(sdata, pitch_um=100.0, radius_um=27.5, margin_um=50.0):
    """Spots on a square lattice summing the synthetic truth inside each: ``(centres (n, 2), counts, genes)``."""
    from spatialdata.transformations import get_transformation

    el = sdata.images["hr_counts"]
    counts = np.asarray(el.data)
    genes = [str(g) for g in el.coords["c"].values]
    bin_um = float(get_transformation(el).to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))[0, 0])
    _, H, W = counts.shape
    yy, xx = np.meshgrid((np.arange(H) + 0.5) * bin_um, (np.arange(W) + 0.5) * bin_um, indexing="ij")
    centres, values = [], []
    for y in np.arange(margin_um, H * bin_um - margin_um + 1e-9, pitch_um):
        for x in np.arange(margin_um, W * bin_um - margin_um + 1e-9, pitch_um):
            inside = (yy - y) ** 2 + (xx - x) ** 2 <= radius_um**2
            centres.append((x, y))
            values.append(counts[:, inside].sum(1))
    return np.asarray(centres, float), np.rint(np.asarray(values)).astype(np.int64), genes


def hex_centres(n_rows=8, n_cols=8, pitch=100.0, origin=(100.0, 100.0)):
    """Centres ``(n, 2)`` of a hexagonal lattice (Visium-like)."""
    pts = []
    for r in range(n_rows):
        for c in range(n_cols):
            pts.append((origin[0] + c * pitch + (pitch / 2) * (r % 2), origin[1] + r * pitch * np.sqrt(3) / 2))
    return np.asarray(pts)


def build_context(workdir: Path) -> dict:
    """The synthetic section, its Visium-like and ST-like spot sections, a tiny trained model, files."""
    import stdiff as sd

    syn = sd.datasets.synthetic_tissue(size_um=800, n_genes=8, seed=1)
    centres, counts, genes = spot_counts(syn)
    ids = [f"spot{i}" for i in range(len(centres))]
    he = syn.images["he"]
    rgb = np.moveaxis(np.asarray(he["scale0"].image.values), 0, -1)  # (H, W, 3) at 1 µm/px
    model = sd.tl.train(syn, factor=5, config="tiny", steps=4, progress=False, seed=0)
    st_centres, st_counts, _ = spot_counts(syn, pitch_um=200.0, radius_um=50.0, margin_um=100.0)
    ctx = dict(syn=syn, centres=centres, counts=counts, genes=genes, ids=ids, he=he, rgb=rgb, model=model,
               st_centres=st_centres, st_counts=st_counts, workdir=workdir)  # fmt: skip
    ctx["hex"] = hex_centres()
    return ctx


def spots_sdata(ctx, **kw):
    """A fresh spots section (64 Visium-like spots, 8 genes, H&E at 1 µm/px) in µm."""
    import stdiff as sd

    return sd.io.from_spots(ctx["counts"], ctx["centres"], ctx["he"], genes=ctx["genes"], spot_ids=ctx["ids"],
                            units="um", spot_diameter_um=55.0, **kw)  # fmt: skip


def st_sdata(ctx):
    import stdiff as sd

    ids = [f"st{i}" for i in range(len(ctx["st_centres"]))]
    return sd.io.from_spots(ctx["st_counts"], ctx["st_centres"], ctx["he"], genes=ctx["genes"], spot_ids=ids,
                            units="um", spot_diameter_um=100.0)  # fmt: skip


def superresolve(sdata, ctx, **kw):
    import stdiff as sd

    kw.setdefault("model", ctx["model"])
    kw.setdefault("progress", False)
    return sd.tl.superresolve(sdata, **kw)


def image_of(sdata, key="stdiff"):
    el = sdata.images[key]
    data = el["scale0"].image.data if hasattr(el, "children") and len(el.children) else el.data
    return np.asarray(data)


# --------------------------------------------------------------------------------------------- cases


def _set_target(ctx, key, sdata):
    ctx[key] = sdata
    return sdata


def cases_data_lost() -> list[Case]:
    def zeros(ctx):
        import stdiff.tl._stream as stream

        s = _set_target(ctx, "t", spots_sdata(ctx))
        kw = dict(conserve_counts=True, chunk_lr=4, hr_um=20, n_samples=0)  # 9 chunks, the mean only (fast)
        ref = superresolve(spots_sdata(ctx), ctx, copy=True, **kw)
        old = stream.IN_MEMORY_MB
        stream.IN_MEMORY_MB = 0
        try:
            superresolve(s, ctx, **kw)
        finally:
            stream.IN_MEMORY_MB = old
        gc.collect()
        return image_of(s), image_of(ref)

    def own_key(key, prepare=None, **kw):
        def run(ctx):
            s = _set_target(ctx, "t", spots_sdata(ctx))
            if prepare:
                prepare(s)
            ctx["before_he"] = image_of(s, "he").copy() if "he" in s.images else None
            superresolve(s, ctx, key_added=key, hr_um=20, **kw)
            return s

        return run

    def add_overlay_std(s):
        from spatialdata.models import Image2DModel

        s.images["overlay_std"] = Image2DModel.parse(np.ones((1, 8, 8), np.float32), dims=("c", "y", "x"))

    def rerun(ctx):
        s = _set_target(ctx, "t", spots_sdata(ctx))
        superresolve(s, ctx, hr_um=20, seed=1)
        ctx["first"] = image_of(s, "stdiff_std").copy()
        superresolve(s, ctx, hr_um=20, seed=2)
        return s

    def read_st_half(ctx):
        d = ctx["workdir"] / "st_half"
        write_st(ctx, d, counts_rows=slice(0, None, 2))
        return read_st_logged(d, ctx)

    def by_id(shuffle: bool, disagree: bool):
        def run(ctx):
            import stdiff as sd

            counts = pd.DataFrame(ctx["counts"], index=ctx["ids"], columns=ctx["genes"])
            pos = pd.DataFrame(ctx["centres"], index=ctx["ids"], columns=["x", "y"])
            if shuffle:
                pos = pos.iloc[np.random.default_rng(0).permutation(len(pos))]
            if disagree:
                pos.index = [f"other{i}" for i in range(len(pos))]
            return sd.io.from_spots(counts, pos, ctx["he"], units="um", spot_diameter_um=55.0)

        return run

    def in_place(out, ctx):
        t = out["table"]
        want = pd.DataFrame(ctx["centres"], index=ctx["ids"]).loc[t.obs_names].to_numpy()
        return np.allclose(t.obsm["spatial"], want)

    def table_half(ctx):
        d = ctx["workdir"] / "table_half"
        d.mkdir(exist_ok=True)
        n = len(ctx["ids"])
        pd.DataFrame({"barcode": ctx["ids"], "x": ctx["centres"][:, 0], "y": ctx["centres"][:, 1]}).to_csv(
            d / "pos.csv", index=False
        )
        pd.DataFrame(ctx["counts"][: n // 2], index=ctx["ids"][: n // 2], columns=ctx["genes"]).to_csv(d / "c.csv")
        return logged(lambda: __import__("stdiff").io.read_spots_table(
            d / "pos.csv", d / "c.csv", ctx["he"], units="um", spot_diameter_um=55.0))  # fmt: skip

    def warned(pattern):
        return lambda res, ctx: res[1] and any(re.search(pattern, m) for m in res[1])

    return [
        Case("conserved multi-chunk result on disk reads back", "data lost", zeros, "ok",
             check=lambda r, c: r[0].max() > 0 and np.allclose(r[0], r[1], rtol=1e-5, atol=1e-5), wrong="lost"),
        Case("key_added='he' (the H&E)", "data lost", own_key("he"), clear=r"key_added='he'.*not write", wrong="lost",
             target="t"),
        Case("key_added='overlay' with the user's 'overlay_std'", "data lost",
             own_key("overlay", add_overlay_std, n_samples=0), clear=r"overlay_std.*did not write", wrong="lost",
             target="t"),
        Case("key_added='spots' (a shapes element)", "data lost", own_key("spots"), clear=r"'spots'.*did not write",
             wrong="lost", target="t"),
        Case("key_added='table' (the table)", "data lost", own_key("table"), clear=r"'table'.*did not write",
             wrong="lost", target="t"),
        Case("key_added='HE' (case variant of the H&E)", "data lost", own_key("HE"), clear=r"'he'.*did not write",
             wrong="lost", target="t"),
        Case("second call replaces the first result without overwrite=", "data lost", rerun,
             clear=r"overwrite=True", wrong="lost", target="t"),
        Case("read_st: counts for half the spots", "data lost", read_st_half, "ok",
             check=warned(r"\d+ of the \d+ spots .* dropped"), wrong="silent"),
        Case("read_spots_table: counts for half the barcodes", "data lost", table_half, "ok",
             check=warned(r"\d+ of the \d+ spots .* dropped"), wrong="silent"),
        Case("from_spots: positions indexed by id, another order", "data lost", by_id(True, False), "ok",
             check=in_place, wrong="silent"),
        Case("from_spots: positions and counts name other spots", "data lost", by_id(False, True),
             clear=r"name different spots"),
    ]  # fmt: skip


def write_st(ctx, d: Path, counts_rows=slice(None), dup_counts=False) -> None:
    """An ST pipeline folder: counts.tsv (``"{x}x{y}"`` rows), spots.tsv, he.png (1 µm / px)."""
    from PIL import Image

    d.mkdir(exist_ok=True, parents=True)
    xy = ctx["st_centres"]
    ax, ay = np.rint((xy[:, 0] - 100) / 200 + 1).astype(int), np.rint((xy[:, 1] - 100) / 200 + 1).astype(int)
    keys = [f"{a}x{b}" for a, b in zip(ax, ay)]
    table = pd.DataFrame({"x": ax, "y": ay, "new_x": ax, "new_y": ay, "pixel_x": xy[:, 0], "pixel_y": xy[:, 1],
                          "selected": 1})  # fmt: skip
    table.to_csv(d / "spots.tsv", sep="\t", index=False)
    counts = pd.DataFrame(ctx["st_counts"], index=keys, columns=ctx["genes"]).iloc[counts_rows]
    if dup_counts:
        counts = pd.concat([counts, counts.iloc[:2]])
    counts.to_csv(d / "counts.tsv", sep="\t")
    Image.fromarray(ctx["rgb"]).save(d / "he.png")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def captured_logs():
    h = _Records()
    log = logging.getLogger("stdiff")
    old = log.level
    log.addHandler(h)
    log.setLevel(logging.INFO)
    try:
        yield h.messages
    finally:
        log.removeHandler(h)
        log.setLevel(old)


def logged(fn):
    """``(fn(), warnings logged)``."""
    with captured_logs() as messages:
        out = fn()
    return out, [m for m in messages if "dropped" in m or "not in" in m]


def read_st_logged(d: Path, ctx):
    import stdiff as sd

    return logged(lambda: sd.io.read_st(d / "counts.tsv", d / "spots.tsv", d / "he.png"))


def cases_silent() -> list[Case]:
    import stdiff as sd

    def fs(counts=None, positions=None, image=None, **kw):
        def run(ctx):
            c = ctx["counts"] if counts is None else counts(ctx)
            p = ctx["centres"] if positions is None else positions(ctx)
            img = ctx["he"] if image is None else image(ctx)
            kw2 = dict(genes=ctx["genes"], units="um", spot_diameter_um=55.0)
            kw2.update(kw)
            return sd.io.from_spots(c, p, img, **kw2)

        return run

    def big_counts(ctx):
        c = ctx["counts"].astype(np.float64)
        c[0, 0] = 3e9
        return c

    def inf_counts(ctx):
        c = ctx["counts"].astype(np.float64)
        c[0, 0] = np.inf
        return c

    def dup_genes(ctx):
        g = list(ctx["genes"])
        g[1] = g[0]
        return g

    def table_dup_genes(ctx):
        import anndata as ad
        import scipy.sparse as sp
        from spatialdata.models import TableModel

        s = _set_target(ctx, "t", spots_sdata(ctx))
        t = s.tables["table"]
        X = sp.hstack([t.X, t.X[:, :1] * 2]).tocsr()  # a second column named like the first, other counts
        dup = ad.AnnData(X=X, obs=t.obs.copy(), var=pd.DataFrame(index=[*t.var_names, t.var_names[0]]))
        del s.tables["table"]
        s.tables["table"] = TableModel.parse(dup, region="spots", region_key="region", instance_key="spot_id")
        superresolve(s, ctx, hr_um=20)
        return s

    def nan_image_element(ctx):
        s = _set_target(ctx, "t", spots_sdata(ctx))
        from spatialdata.models import Image2DModel
        from spatialdata.transformations import get_transformation

        tf = get_transformation(s.images["he"], get_all=True)
        s.images["he"] = Image2DModel.parse(np.full((3, 800, 800), np.nan, np.float32), dims=("c", "y", "x"),
                                            transformations=tf)  # fmt: skip
        superresolve(s, ctx, hr_um=20)
        return s

    def samples(n):
        def run(ctx):
            s = _set_target(ctx, "t", spots_sdata(ctx))
            superresolve(s, ctx, hr_um=20, n_samples=n)
            return s

        return run

    def outlier_sdata(ctx):
        s = _set_target(ctx, "t", spots_sdata(ctx))
        import geopandas as gpd

        shapes = s.shapes["spots"]
        geom = list(shapes.geometry)
        geom[0] = gpd.points_from_xy([5800.0], [400.0])[0]
        shapes.geometry = gpd.GeoSeries(geom, index=shapes.index)
        superresolve(s, ctx, hr_um=20)
        return s

    hexc = lambda f: lambda ctx: ctx["hex"] * f
    hex_counts = lambda ctx: np.ones((len(ctx["hex"]), len(ctx["genes"])), int)
    rgb_px = lambda ctx: np.full((2000, 2000, 3), 200, np.uint8)
    nan_img = lambda ctx: np.full((800, 800, 3), np.nan, np.float32)
    far = lambda ctx: np.vstack([ctx["centres"][:-1], [[5800.0, 400.0]]])
    no_std = lambda s, c: "stdiff_std" not in s.images

    return [
        Case("whole-number float counts > 2^31", "silent", fs(counts=big_counts), "ok",
             check=lambda out, c: float(out["table"].X.max()) == 3e9),
        Case("infinite counts", "silent", fs(counts=inf_counts), clear=r"NaN or infinite"),
        Case("duplicated gene names (from_spots)", "silent", fs(genes=None, counts=lambda c: pd.DataFrame(
             c["counts"], index=c["ids"], columns=dup_genes(c))), clear=r"Gene names repeat"),
        Case("duplicated var_names, genes= one of them", "silent", table_dup_genes,
             clear=r"name several columns", target="t"),
        Case("µm positions declared as pixels (um_per_px=0.5, visium)", "silent",
             fs(counts=hex_counts, positions=hexc(1.0), image=rgb_px, units="px", um_per_px=0.5, platform="visium",
                spot_diameter_um=None), clear=r"units='um'"),
        Case("inverse affine (µm → px given)", "silent",
             fs(counts=hex_counts, positions=hexc(2.0), image=rgb_px, units="px", affine=[[2.0, 0, 0], [0, 2.0, 0]],
                platform="visium", spot_diameter_um=None), clear=r"affine=.*pixels to µm"),
        Case("all-NaN image array", "silent", fs(image=nan_img), clear=r"NaN or infinite pixels"),
        Case("all-NaN image element given to superresolve", "silent", nan_image_element,
             clear=r"NaN or infinite pixels", target="t"),
        Case("n_samples=0 writes no all-zero std", "silent", samples(0), "ok", check=no_std),
        Case("n_samples=-1", "silent", samples(-1), clear=r"n_samples must be", target="t"),
        Case("n_samples=1 (std of one sample)", "silent", samples(1), clear=r"n_samples=1", target="t"),
        Case("lattice 15% over the pitch with platform='visium'", "silent",
             fs(counts=hex_counts, positions=hexc(1.15), platform="visium", spot_diameter_um=None,
                image=lambda c: np.full((1200, 1200, 3), 200, np.uint8), um_per_px=1.0),
             clear=r"platform='visium' has spots 100 µm apart"),
        Case("one spot 5 mm outside the image (from_spots)", "silent", fs(positions=far, spot_ids=None),
             clear=r"outside the image"),
        Case("one spot 5 mm outside the image (superresolve)", "silent", outlier_sdata, clear=r"outside", target="t",
             limit_s=60),
        Case("genes='EPCAM' (a string)", "silent", lambda c: superresolve(spots_sdata(c), c, genes=c["genes"][0]),
             clear=r"list of gene names.*\["),
    ]  # fmt: skip


def cases_crash() -> list[Case]:
    import stdiff as sd

    def fs(counts=None, positions=None, image=None, **kw):
        def run(ctx):
            c = ctx["counts"] if counts is None else counts(ctx)
            p = ctx["centres"] if positions is None else positions(ctx)
            img = ctx["he"] if image is None else image(ctx)
            kw2 = dict(genes=ctx["genes"], units="um", spot_diameter_um=55.0)
            kw2.update(kw)
            return sd.io.from_spots(c, p, img, **kw2)

        return run

    def nan_pos(ctx):
        p = ctx["centres"].copy()
        p[3] = np.nan
        return p

    def same_point(ctx):
        return np.zeros_like(ctx["centres"]) + 400.0

    def two_same(ctx):
        p = ctx["centres"].copy()
        p[1] = p[0]
        return p

    def text_column(ctx):
        df = pd.DataFrame(ctx["counts"], index=ctx["ids"], columns=ctx["genes"])
        df["cell_type"] = "tumour"
        return df

    def sdata_edit(edit):
        def run(ctx):
            s = _set_target(ctx, "t", spots_sdata(ctx))
            edit(s, ctx)
            superresolve(s, ctx, hr_um=20)
            return s

        return run

    def one_spot(s, ctx):
        t = s.tables["table"]
        keep = t[:1].copy()
        del s.tables["table"]
        s.tables["table"] = keep

    def move_spots(fn):
        def edit(s, ctx):
            import geopandas as gpd

            shapes = s.shapes["spots"]
            xy = np.c_[shapes.geometry.x, shapes.geometry.y]
            xy = fn(xy)
            shapes.geometry = gpd.GeoSeries(gpd.points_from_xy(xy[:, 0], xy[:, 1]), index=shapes.index)

        return edit

    def nan_first(xy):
        xy = xy.copy()
        xy[0] = np.nan
        return xy

    def files(kind):
        def run(ctx):
            d = ctx["workdir"] / f"files_{kind}"
            d.mkdir(exist_ok=True)
            pos = pd.DataFrame({"barcode": ctx["ids"], "x": ctx["centres"][:, 0], "y": ctx["centres"][:, 1]})
            pos.to_csv(d / "pos.csv", index=False)
            pd.DataFrame(ctx["counts"], index=ctx["ids"], columns=ctx["genes"]).to_csv(d / "c.csv")
            if kind == "empty":
                (d / "pos.csv").write_text("")
            elif kind == "header":
                (d / "pos.csv").write_text("barcode,x,y\n")
            elif kind == "dup":
                pd.concat([pos, pos.iloc[:2]]).to_csv(d / "pos.csv", index=False)
            elif kind == "text_x":
                pos.assign(x="a").to_csv(d / "pos.csv", index=False)
            elif kind == "missing":
                (d / "c.csv").unlink()
            elif kind == "bad_image":
                (d / "he.png").write_bytes(b"not an image")
                return sd.io.read_spots_table(d / "pos.csv", d / "c.csv", d / "he.png", units="um", um_per_px=1.0,
                                              spot_diameter_um=55.0)  # fmt: skip
            return sd.io.read_spots_table(d / "pos.csv", d / "c.csv", ctx["rgb"], units="um", um_per_px=1.0,
                                          spot_diameter_um=55.0)  # fmt: skip

        return run

    def st_empty_counts(ctx):
        d = ctx["workdir"] / "st_empty"
        write_st(ctx, d)
        (d / "counts.tsv").write_text("")
        return sd.io.read_st(d / "counts.tsv", d / "spots.tsv", d / "he.png")

    def other_cs(ctx):
        return sd.io.from_spots(ctx["counts"], ctx["centres"], ctx["he"], genes=ctx["genes"], units="um",
                                spot_diameter_um=55.0, coordinate_system="aligned")  # fmt: skip

    def not_in_shapes(s, ctx):
        t = s.tables["table"]
        t.obs["spot_id"] = [f"x{i}" for i in range(t.n_obs)]

    return [
        Case("1 spot (from_spots)", "crash", fs(counts=lambda c: c["counts"][:1], positions=lambda c: c["centres"][:1],
                                                spot_ids=None, units="px", um_per_px=None, platform="visium",
                                                spot_diameter_um=None), clear=r"at least 2 spots"),
        Case("NaN position", "crash", fs(positions=nan_pos), clear=r"NaN or infinite"),
        Case("all spots at one point", "crash", fs(positions=same_point), clear=r"one point"),
        Case("two spots at one point", "crash", fs(positions=two_same), clear=r"share a position"),
        Case("DataFrame counts with a text column", "crash", fs(counts=text_column, genes=None),
             clear=r"not counts.*cell_type"),
        Case("1-D counts vector", "crash", fs(counts=lambda c: c["counts"][:, 0], genes=["g"]),
             clear=r"reshape\(-1, 1\)"),
        Case("image=None", "crash", lambda c: sd.io.from_spots(c["counts"], c["centres"], None, genes=c["genes"],
                                                               units="um", spot_diameter_um=55.0),
             clear=r"image is None"),
        Case("negative counts", "crash", fs(counts=lambda c: -c["counts"]), clear=r"negative"),
        Case("positions (2, n) transposed", "crash", fs(positions=lambda c: c["centres"].T), clear=r"positions\.T"),
        Case("positions with 3 columns", "crash", fs(positions=lambda c: np.c_[c["centres"], c["centres"][:, 0]]),
             clear=r"positions must be"),
        Case("image 4-D", "crash", fs(image=lambda c: np.zeros((2, 3, 10, 10), np.uint8)), clear=r"2-D or 3-D"),
        Case("image element not in coordinate_system", "crash", other_cs, clear=r"coordinate_system='aligned'"),
        Case("positions file empty", "crash", files("empty"), clear=r"pos\.csv.*empty"),
        Case("positions file header only", "crash", files("header"), clear=r"pos\.csv.*no rows"),
        Case("positions file repeats barcodes", "crash", files("dup"), clear=r"more than once"),
        Case("positions file with text x", "crash", files("text_x"), clear=r"not numbers"),
        Case("counts file missing", "crash", files("missing"), clear=r"c\.csv"),
        Case("image file not an image", "crash", files("bad_image"), clear=r"he\.png"),
        Case("read_st: empty counts file", "crash", st_empty_counts, clear=r"counts\.tsv.*empty"),
        Case("superresolve: a table of 1 spot", "crash", sdata_edit(one_spot), clear=r"at least 2 spots", target="t"),
        Case("superresolve: NaN spot position", "crash", sdata_edit(move_spots(nan_first)), clear=r"finite",
             target="t"),
        Case("superresolve: all spots at one point", "crash", sdata_edit(move_spots(lambda xy: xy * 0 + 400)),
             clear=r"share a centre", target="t"),
        Case("superresolve: table rows not in the shapes", "crash", sdata_edit(not_in_shapes),
             clear=r"not in shapes", target="t"),
        Case("superresolve: an AnnData instead of a SpatialData", "crash",
             lambda c: superresolve(spots_sdata(c).tables["table"], c), clear=r"must be a spatialdata"),
    ]  # fmt: skip


def cases_misleading() -> list[Case]:
    import stdiff as sd

    def spot_model_on_st(ctx):
        m = copy.copy(ctx["model"])
        m.platform = "visium"
        s = _set_target(ctx, "t", st_sdata(ctx))
        superresolve(s, ctx, model=m)
        return s

    def st_dup_rows(ctx):
        d = ctx["workdir"] / "st_dup"
        write_st(ctx, d, dup_counts=True)
        return sd.io.read_st(d / "counts.tsv", d / "spots.tsv", d / "he.png")

    def under_pitch(ctx):
        return sd.io.from_spots(np.ones((len(ctx["hex"]), 2), int), ctx["hex"] * 0.85,
                                np.full((1200, 1200, 3), 200, np.uint8), genes=["a", "b"], um_per_px=1.0,
                                platform="visium")  # fmt: skip

    def percent_log(ctx):
        with captured_logs() as messages:
            superresolve(spots_sdata(ctx), ctx, hr_um=20, copy=True)
        return messages

    def call(**kw):
        def run(ctx):
            s = _set_target(ctx, "t", spots_sdata(ctx))
            superresolve(s, ctx, **{"hr_um": 20, **kw})
            return s

        return run

    def other_systems(ctx):
        from spatialdata.transformations import Identity, set_transformation

        s = _set_target(ctx, "t", spots_sdata(ctx))
        set_transformation(s.shapes["spots"], Identity(), "aligned")
        set_transformation(s.shapes["spots"], {"aligned": Identity()}, set_all=True)
        superresolve(s, ctx, hr_um=20, coordinate_system="global")
        return s

    def copy_case(ctx):
        s = spots_sdata(ctx)
        before = snapshot(s)
        out = superresolve(s, ctx, hr_um=20, n_samples=0, copy=True)
        return same(before, snapshot(s)) and "stdiff" in out.images

    return [
        Case("visium-trained model on legacy ST spots", "misleading", spot_model_on_st,
             clear=r"trained for 'visium' spots.*'st'", target="t"),
        Case("read_st: repeated rows in counts", "misleading", st_dup_rows, clear=r"counts\.tsv.*more than once"),
        Case("lattice 15% under the pitch, platform='visium'", "misleading", under_pitch,
             clear=r"platform='visium' has spots 100 µm apart"),
        Case("genes=[]", "misleading", call(genes=[]), clear=r"genes=\[\]", target="t"),
        Case("no '%%' in log lines", "misleading", percent_log, "ok", check=lambda m, c: not any("%%" in x for x in m),
             wrong="unclear"),
        Case("key_added='my key' (a space)", "misleading", call(key_added="my key"), clear=r"key_added='my key'",
             target="t"),
        Case("key_added=''", "misleading", call(key_added=""), clear=r"key_added must be", target="t"),
        Case("chunk_lr=0", "misleading", call(chunk_lr=0), clear=r"chunk_lr", target="t"),
        Case("chunk_lr=2.5", "misleading", call(chunk_lr=2.5), clear=r"chunk_lr", target="t"),
        Case("hr_um=-10", "misleading", call(hr_um=-10), clear=r"hr_um", target="t"),
        Case("lr_um=0", "misleading", call(lr_um=0), clear=r"lr_um", target="t"),
        Case("factor=0", "misleading", call(factor=0), clear=r"factor", target="t"),
        Case("scale_factors=[0]", "misleading", call(scale_factors=[0]), clear=r"scale_factors", target="t"),
        Case("seed=-1", "misleading", call(seed=-1), clear=r"seed", target="t"),
        Case("num_inference_steps=0", "misleading", call(num_inference_steps=0), clear=r"num_inference_steps",
             target="t"),
        Case("genes with a repeat", "misleading", call(genes=["EPCAM", "EPCAM"]), clear=r"more than once",
             target="t"),
        Case("unknown gene", "misleading", call(genes=["NOPE"]), clear=r"NOPE", target="t"),
        Case("coordinate_system='nope'", "misleading", call(coordinate_system="nope"),
             clear=r"coordinate_system='nope'",
             target="t"),
        Case("image_key='HE'", "misleading", call(image_key="HE"), clear=r"image_key='HE'", target="t"),
        Case("table_key='nope'", "misleading", call(table_key="nope"), clear=r"table_key='nope'", target="t"),
        Case("layer='raw' (absent)", "misleading", call(layer="raw"), clear=r"layer='raw'", target="t"),
        Case("model path that does not exist", "misleading", call(model="/nonexistent/model.pt"),
             clear=r"No stdiff model", target="t"),
        Case("self_supervised='nope' (no model)", "misleading", call(model=None, self_supervised="nope"),
             clear=r"self_supervised", target="t"),
        Case("image and spots in different coordinate systems", "misleading", other_systems,
             clear=r"has no transformation to coordinate system", target="t"),
        Case("hr_um other than the model's", "misleading", call(hr_um=10), clear=r"hr_um=10 but the model",
             target="t"),
        Case("um_per_px=0", "misleading", lambda c: sd.io.from_spots(c["counts"], c["centres"], c["rgb"],
             genes=c["genes"], um_per_px=0, spot_diameter_um=55.0), clear=r"um_per_px must be positive"),
        Case("image given as a nested list", "misleading", lambda c: sd.io.from_spots(c["counts"], c["centres"],
             [[1, 2], [3, 4]], genes=c["genes"], units="um", spot_diameter_um=55.0), clear=r"image must be an array"),
        Case("copy=True leaves the input alone", "misleading", copy_case, "ok", check=lambda r, c: r),
        Case("platform='10x' in from_spots", "misleading", lambda c: sd.io.from_spots(
             c["counts"], c["centres"], c["he"], genes=c["genes"], units="um", platform="10x"), clear=r"platform"),
    ]  # fmt: skip


def cases_hang() -> list[Case]:
    def many_barcodes(n):
        def run(ctx):
            import stdiff as sd

            rng = np.random.default_rng(0)
            side = int(np.ceil(np.sqrt(n)))
            jj, ii = np.meshgrid(np.arange(side), np.arange(side))
            xy = np.c_[jj.ravel(), ii.ravel()][:n] * 100.0 + 50
            ids = [f"BC{i:07d}" for i in range(n)]
            pos = pd.DataFrame({"barcode": ids, "x": xy[:, 0], "y": xy[:, 1]})
            counts = pd.DataFrame(rng.poisson(1, (n, 2)), index=ids, columns=["a", "b"])
            img = np.full((side * 10 + 10, side * 10 + 10, 3), 200, np.uint8)
            return sd.io.read_spots_table(pos, counts, img, units="um", um_per_px=10.0, spot_diameter_um=55.0)

        return run

    return [
        Case(
            "read_spots_table, 20,000 barcodes (limit 20 s)",
            "hang",
            many_barcodes(20_000),
            "ok",
            check=lambda out, c: out["table"].n_obs == 20_000,
            limit_s=20,
        ),
    ]


# -------------------------------------------------------------------------------------------- runner


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    def handler(signum, frame):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def snapshot(sdata) -> dict:
    """Element names, the images' pixels (small ones), the tables' matrices and the attrs."""
    snap = {"keys": {k: sorted(getattr(sdata, k)) for k in ("images", "labels", "points", "shapes", "tables")}}
    snap["tables"] = {n: (t.X.toarray() if hasattr(t.X, "toarray") else np.asarray(t.X)).copy()
                      for n, t in sdata.tables.items()}  # fmt: skip
    snap["images"] = {k: image_of(sdata, k).copy() for k in sdata.images}
    snap["attrs"] = json.dumps(sdata.attrs, default=str, sort_keys=True)
    snap["centroids"] = {k: np.c_[v.geometry.centroid.x, v.geometry.centroid.y] for k, v in sdata.shapes.items()}
    return snap


def same(a: dict, b: dict) -> bool:
    if a["keys"] != b["keys"] or a["attrs"] != b["attrs"]:
        return False
    for part in ("tables", "images", "centroids"):
        for k in a[part]:
            x, y = a[part][k], b[part][k]
            if x.shape != y.shape or not np.array_equal(x, y, equal_nan=True):
                return False
    return True


class WorkWatch:
    """Counts predictions and fits started inside ``superresolve`` (an error after them came after the work)."""

    def __init__(self):
        import stdiff.tl._superresolve as srmod

        self.started = 0
        self.mod = srmod
        for name in ("predict_streamed", "_learn"):
            orig = getattr(srmod, name)

            def wrapped(*a, _orig=orig, **k):
                self.started += 1
                return _orig(*a, **k)

            setattr(srmod, name, wrapped)


def is_raw(err: BaseException) -> bool:
    """An exception that reaches the user from a library or as a programming error."""
    if not isinstance(err, OURS):
        return True
    tb = traceback.extract_tb(err.__traceback__)
    return not tb or "/stdiff/" not in tb[-1].filename.replace("\\", "/")


def run_case(case: Case, ctx: dict, watch: WorkWatch) -> Outcome:
    """Run one case and classify what the user got."""
    ctx.pop("t", None)
    watch.started = 0
    target_snap: dict = {}
    t0 = time.perf_counter()
    try:
        with time_limit(case.limit_s):
            result = _run_with_snapshot(case, ctx, target_snap, watch)
    except _Timeout:
        return Outcome(case.name, case.category, "hang", time.perf_counter() - t0)
    except Exception as err:
        msg = str(err.args[0]) if err.args else repr(err)
        if is_raw(err):
            outcome = "crash"
        elif case.expect == "ok":
            outcome = "unclear"
        else:
            outcome = "clear" if case.clear and re.search(case.clear, msg, re.S) else "unclear"
        unchanged = None
        if case.target and "snap" in target_snap and ctx.get("t") is not None:
            unchanged = same(target_snap["snap"], snapshot(ctx["t"]))
        return Outcome(case.name, case.category, outcome, time.perf_counter() - t0, unchanged, watch.started > 0,
                       f"{type(err).__name__}: {msg}"[:300])  # fmt: skip
    seconds = time.perf_counter() - t0
    if case.expect == "error":
        return Outcome(case.name, case.category, case.wrong, seconds, message="no error")
    try:
        good = bool(case.check(result, ctx))
    except Exception as err:
        good, msg = False, f"check failed: {type(err).__name__}: {err}"
    else:
        msg = "" if good else "wrong result"
    return Outcome(case.name, case.category, "ok" if good else case.wrong, seconds, message=msg)


def _run_with_snapshot(case: Case, ctx: dict, target_snap: dict, watch: WorkWatch):
    """Run the case; the target SpatialData is snapshotted when stdiff first sees it (``superresolve``)."""
    import stdiff as sd

    orig = sd.tl.superresolve

    def spy(sdata, *a, **k):  # the state handed to the call that fails, and the work that call started
        if sdata is ctx.get("t"):
            target_snap["snap"] = snapshot(sdata)
            watch.started = 0
        return orig(sdata, *a, **k)

    sd.tl.superresolve = spy
    try:
        return case.run(ctx)
    finally:
        sd.tl.superresolve = orig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write the outcomes here")
    p.add_argument("--only", help="run the cases whose name contains this")
    args = p.parse_args(argv)
    logging.getLogger("stdiff").setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")
    cases = cases_data_lost() + cases_silent() + cases_crash() + cases_misleading() + cases_hang()
    if args.only:
        cases = [c for c in cases if args.only in c.name]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ctx = build_context(Path(tmp))
        print(f"context built in {time.perf_counter() - t0:.0f} s", flush=True)
        watch = WorkWatch()
        outcomes = []
        for case in cases:
            out = run_case(case, ctx, watch)
            outcomes.append(out)
            flags = ("" if out.unchanged in (None, True) else " CHANGED") + (" late" if out.after_work else "")
            print(f"{out.outcome:8s} {out.seconds:6.1f}s {case.category:11s} {case.name}{flags}  | {out.message[:140]}",
                  flush=True)  # fmt: skip
    totals = Counter(o.outcome for o in outcomes)
    errors = [o for o in outcomes if o.outcome in ("clear", "unclear", "crash")]
    print("\ntotals:", dict(sorted(totals.items())), f"of {len(outcomes)} cases")
    checked = [o for o in errors if o.unchanged is not None]
    print(f"errors leaving the SpatialData unchanged: {sum(o.unchanged for o in checked)} of {len(checked)} checked; "
          f"errors after the work had started: {sum(bool(o.after_work) for o in errors)}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps([o.__dict__ for o in outcomes], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
