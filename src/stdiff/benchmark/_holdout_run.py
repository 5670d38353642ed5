"""``stdiff benchmark --track spot-holdout``: the spot hold-out track over sections, its JSON and its report."""

from __future__ import annotations

import json
import os
import platform as _platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import logger, plain
from ._holdout import HOLDOUT_METHODS, run_section

#: Sections of the built-in datasets the track runs on.
HOLDOUT_DATASETS: dict[str, tuple[str, ...]] = {
    "her2st": ("B4", "C2", "C3", "C4", "C5"),
    "visium_mini": ("visium_mini",),
}
#: Columns of the report (JSON key, header).
_COLUMNS = (("pcc", "r (log1p)"), ("deviance", "Poisson deviance"), ("cov90", "cov90"), ("zero_px", "zero px"),
            ("seconds", "s / fold"))  # fmt: skip


def _load(dataset: str | None, name: str, data_dir: str | os.PathLike | None):
    import spatialdata as sd_mod

    import stdiff as sd

    if dataset is None:
        return sd_mod.read_zarr(name)
    if dataset == "visium_mini":
        return sd.datasets.visium_mouse_brain_mini(data_dir=data_dir)
    return sd.datasets.her2st(name, data_dir=data_dir)


def _table_key(sdata, table_key: str | None) -> str:
    if table_key is not None:
        return table_key
    if len(sdata.tables) != 1:
        raise ValueError(f"The SpatialData has tables {list(sdata.tables)}; pass --table-key.")
    return next(iter(sdata.tables))


def pick_genes(table, genes: int | str | Sequence[str] | None, rule: str = "counts") -> list[str]:
    """An explicit list, or the top ``genes`` (default 16) by total counts (``"counts"``) or by variance of log1p CP10k."""
    if isinstance(genes, str) and not genes.isdigit():
        genes = [g.strip() for g in genes.split(",") if g.strip()]
    if isinstance(genes, list | tuple):
        return list(genes)
    n = int(genes or 16)
    X = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    X = np.asarray(X, np.float64)
    if rule == "variance":
        lib = np.maximum(X.sum(1, keepdims=True), 1.0)
        score = np.log1p(X / lib * 1e4).var(0) * (X.mean(0) >= 1)
    else:
        score = X.sum(0)
    return [str(g) for g in table.var_names[np.argsort(-score, kind="stable")[:n]]]


def run_holdout(
    dataset: str | None = None,
    *,
    inputs: Sequence[str] | None = None,
    sections: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    folds: int = 10,
    genes: int | str | Sequence[str] | None = None,
    gene_rule: str = "counts",
    table_key: str | None = None,
    hr_um: float | None = None,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Run the spot hold-out track on each section; writes ``out`` (JSON) and the same name with ``.md``."""
    methods = list(methods or HOLDOUT_METHODS)
    unknown = [m for m in methods if m not in HOLDOUT_METHODS]
    if unknown:
        raise ValueError(f"Unknown spot hold-out methods {unknown}; choose from {list(HOLDOUT_METHODS)}.")
    if dataset is not None and dataset not in HOLDOUT_DATASETS:
        raise ValueError(f"The spot hold-out track runs on {sorted(HOLDOUT_DATASETS)} or --input stores, not {dataset!r}.")
    names = list(sections or (HOLDOUT_DATASETS[dataset] if dataset else inputs or []))
    if not names:
        raise ValueError("Pass --dataset her2st | visium_mini or --input store.zarr for the spot hold-out track.")
    t0, c0 = time.perf_counter(), time.process_time()
    res: dict[str, Any] = {"track": "spot_holdout", "dataset": dataset or "input", "command": command,
                           "folds": folds, "seeds": list(seeds), "methods": methods, "gene_rule": gene_rule,
                           "sections": {}}  # fmt: skip
    for name in names:
        sdata = _load(dataset, name, data_dir)
        tk = _table_key(sdata, table_key)
        g = pick_genes(sdata.tables[tk], genes, gene_rule)
        logger.info("spot hold-out on %s: %d spots, genes %s", name, sdata.tables[tk].n_obs, g)
        entry = run_section(sdata, g, tk, methods=methods, seeds=seeds, folds=folds, hr_um=hr_um,
                            progress=lambda msg, n=name: logger.info("%s: %s", n, msg))  # fmt: skip
        res["sections"][str(name)] = {"genes": g, "n_spots": int(sdata.tables[tk].n_obs), "methods": entry}
    res["machine"] = f"{_platform.processor() or _platform.machine()}, {os.cpu_count()} CPU core(s)"
    res["wall_s"], res["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(plain(res), indent=1))
        out.with_suffix(".md").write_text(holdout_markdown(res))
    return res


def holdout_markdown(res: dict[str, Any]) -> str:
    """The report: one table per section (mean ± sd over seeds) and the mean over sections."""
    lines = [f"## Spot hold-out: {res['dataset']}", "", f"Command: `{res['command']}`", "",
             f"Machine: {res.get('machine', '?')}; total {res.get('wall_s', 0):.0f} s wall, {res.get('cpu_s', 0):.0f} s CPU.",
             "", f"Each seed hides every spot once ({res['folds']} folds of {100 / res['folds']:.0f}%); seeds "
             f"{res['seeds']}; values are mean ± sd over seeds. Genes: {res['gene_rule']} rule.", ""]  # fmt: skip
    head = "| method | " + " | ".join(h for _, h in _COLUMNS) + " |"
    sep = "|---" * (len(_COLUMNS) + 1) + "|"
    for name, sec in res["sections"].items():
        lines += [f"### {name} ({sec['n_spots']} spots, {len(sec['genes'])} genes)", "", head, sep]
        for m in res["methods"]:
            e = sec["methods"][m]
            cells = [_cell(e, k) for k, _ in _COLUMNS]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    if len(res["sections"]) > 1:
        lines += ["### Mean over sections", "", "| method | r (log1p) | Δr vs best baseline (min over sections) |",
                  "|---|---|---|"]  # fmt: skip
        for m in res["methods"]:
            r = [s["methods"][m]["pcc"] for s in res["sections"].values()]
            best = [max(s["methods"][b]["pcc"] for b in res["methods"] if b in ("nearest6", "kernel") and b != m)
                    if any(b in res["methods"] for b in ("nearest6", "kernel")) else np.nan
                    for s in res["sections"].values()]  # fmt: skip
            lines.append(f"| {m} | {np.mean(r):.3f} | {np.mean(np.subtract(r, best)):+.3f} ({np.min(np.subtract(r, best)):+.3f}) |")
        lines.append("")
    return "\n".join(lines)


def _cell(entry: dict[str, Any], key: str) -> str:
    v, sd_ = entry.get(key, float("nan")), entry.get(key + "_sd", float("nan"))
    if not np.isfinite(v):
        return "–"
    fmt = ".1f" if key == "seconds" else ".3f"
    return f"{v:{fmt}} ± {sd_:{fmt}}"
