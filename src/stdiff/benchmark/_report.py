"""The benchmark's report: machine description, JSON-safe values and the markdown tables of both tracks."""

from __future__ import annotations

import math
import os
import platform
from typing import Any

import numpy as np

from ._methods import METHODS, VARIANTS

TRACK_TITLES = {
    "reference": "Reference-trained track (trained on the training tissue's HR truth, tested on held-out tissue)",
    "self_supervised": "Self-supervised track (each method sees only the test region's LR map and image)",
}
COLUMNS = ("pcc", "rmse", "ssim", "crps", "coverage50", "coverage90", "spread_skill")
HEADERS = ("PCC", "RMSE", "SSIM", "CRPS", "cov50", "cov90", "spread-skill")


def machine_info(device: str) -> dict[str, Any]:
    """Platform, CPU count, torch/numpy versions and the accelerator, if any."""
    import torch

    import stdiff

    info = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "numpy": np.__version__,
        "stdiff": stdiff.__version__, "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }  # fmt: skip
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    return info


def _fmt(v: Any, nd: int = 3) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _fmt_s(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.3g}" if v < 10 else f"{v:.0f}"


def _pm(mean: Any, sd: Any, n_seeds: int, nd: int = 3) -> str:
    if n_seeds > 1 and mean is not None and sd is not None:
        return f"{_fmt(mean, nd)} ± {_fmt(sd, nd)}"
    return _fmt(mean, nd)


def _diff(d: dict[str, Any] | None, nd: int = 3) -> str:
    if not d or d.get("diff") is None:
        return "–"
    lo, hi = d["ci95"]
    return f"{d['diff']:+.{nd}f} [{_fmt(lo, nd)}, {_fmt(hi, nd)}]"


def _methods_table(tr: dict[str, Any]) -> list[str]:
    """The methods of one track: metrics (mean ± sd over seeds), block index, training and timings."""
    ms = tr.get("methods", {})
    if not ms:
        return []
    lines = [
        "| method | " + " | ".join(HEADERS) + " | block index | train steps | stopped | train (s) | predict (s) | "
        "peak RSS (MB) |",
        "|---" * (len(HEADERS) + 7) + "|",
    ]
    truth_bai = tr.get("truth_block_index")
    if truth_bai:
        lines.append(
            "| *truth* | " + " | ".join("–" for _ in COLUMNS) + f" | {_fmt(float(np.mean(truth_bai)), 2)} | "
            + " | ".join("–" for _ in range(5)) + " |"
        )  # fmt: skip
    for name in (m for m in METHODS if m in ms):
        r = ms[name]
        n = len(r.get("seeds", []))
        cells = [_pm(r["mean"].get(c), r["sd"].get(c), n, 4 if c == "crps" else 3) for c in COLUMNS]
        label = f"**{name}**" if name == "stdiff" else name
        if r.get("n_samples"):
            label += f" (n={r['n_samples']})"
        steps = _fmt_s(r.get("train_steps")) if r.get("learned") else "–"
        stopped = ", ".join(r.get("stopped", [])) if r.get("learned") else "–"
        bai = _fmt(r.get("block_index"), 2)
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {bai} | {steps} | {stopped} | {_fmt_s(r.get('train_s'))} | "
            f"{_fmt_s(r.get('predict_s'))} | {_fmt_s(r.get('peak_rss_mb'))} |"
        )
    return lines


def _difference_table(caption: str, first: str, diffs: dict[str, Any], order: tuple[str, ...]) -> list[str]:
    """A table of paired differences (ΔPCC, ΔRMSE, ΔCRPS with 95% intervals), one row per method in ``order``."""
    if not diffs:
        return []
    lines = ["", caption, "", f"| {first} | ΔPCC | ΔRMSE | ΔCRPS |", "|---|---|---|---|"]
    for name in (m for m in order if m in diffs):
        d = diffs[name]
        lines.append(f"| {name} | {_diff(d['pcc'])} | {_diff(d['rmse'])} | {_diff(d['crps'], 4)} |")
    return lines


def _notes(tr: dict[str, Any]) -> list[str]:
    """The lines under a track's tables: methods not run, the validation data, what the block index is."""
    lines = []
    if tr.get("skipped"):
        by_reason: dict[str, list[str]] = {}
        for k, v in tr["skipped"].items():
            by_reason.setdefault(v, []).append(k)
        lines += ["", "Not run: " + "; ".join(f"{', '.join(ks)} ({v})" for v, ks in by_reason.items()) + "."]
    if tr.get("validation"):
        lines += ["", f"Early-stopping validation: {tr['validation']} (per method: see the JSON)."]
    if tr.get("methods"):
        lines += ["", "Block index: mean |HR gradient| of log1p counts across LR block boundaries ÷ inside blocks "
                  "(median over genes; the truth's own in the first row; no block structure ≈ 1)."]  # fmt: skip
    lines += _gap_lines(tr)
    return lines


def _gap_lines(tr: dict[str, Any]) -> list[str]:
    """Gap/spot index of every point forecast on spot sections: its gap/spot gradient ratio ÷ the truth's."""
    truth = np.array([np.nan if v is None else v for v in tr.get("truth_gap_ratio") or []], dtype=float)
    if not np.isfinite(truth).any():
        return []
    t = float(np.nanmean(truth))
    ratios = {m: r.get("gap_ratio") for m in METHODS if (r := tr.get("methods", {}).get(m))}
    cells = [f"{m} {v / t:.2f}" for m, v in ratios.items() if v is not None and np.isfinite(v)]
    return ["", "Gap/spot index (mean |∇ log1p| 0.35–0.55 pitch from the nearest spot centre ÷ within 0.2 pitch, "
            f"÷ the truth's {t:.2f}; 1 = like the truth): " + ", ".join(cells) + "."]


def track_markdown(track: str, tr: dict[str, Any]) -> list[str]:
    """The tables of one track: methods, paired differences vs stdiff, histology gain, skipped methods."""
    return [
        f"#### {TRACK_TITLES.get(track, track)}",
        "",
        *_methods_table(tr),
        *_difference_table(
            "Ablations and knock-outs against stdiff: mean over genes of the per-gene difference (variant − stdiff, "
            "seeds paired), 95% bootstrap interval over genes.",
            "variant", tr.get("comparisons", {}), VARIANTS,
        ),
        *_difference_table(
            "Histology gain: metric with the real image − metric with the test image rotated 180° (same trained "
            "model; PCC: positive = the image helps; RMSE/CRPS: negative = the image helps).",
            "method", tr.get("histology_gain", {}), METHODS,
        ),
        *_notes(tr),
    ]  # fmt: skip


def run_markdown(dataset: str, run: dict[str, Any]) -> str:
    """Markdown of one factor: both tracks."""
    info = run.get("info", {})
    platform = info.get("platform", "square")
    measured = (
        "LR input: gap-free square aggregates of the HR truth"
        if platform == "square"
        else f"LR input: simulated {platform!r} spots (a lattice with random offset and rotation per seed; training "
        "sections measured on 4 lattices each; counts = the truth under each footprint); every tissue HR pixel is "
        "scored, the gaps between spots included; the LR grid only tiles the HR grid at the pitch"
    )
    lines = [
        f"### {dataset}, ×{run['factor']} (LR {run['lr_um']:g} µm → HR {run['hr_um']:g} µm; histology "
        f"{run['he_um']:g} µm/px; {run['n_genes']} genes)",
        "",
        measured + ".",
        "",
        f"Split {info.get('split')}: train {info.get('train_sections')}, test {info.get('test_sections')}; "
        f"genes: {info.get('gene_selection')}.",
        *(["", f"Histology pixel: {info['he_um_how']}."] if info.get("he_um_how") else []),
    ]
    for track, tr in run.get("tracks", {}).items():
        lines += [""] + track_markdown(track, tr)
    return "\n".join(lines)


def to_markdown(res: dict[str, Any]) -> str:
    """The markdown report of a benchmark result (both tracks of every factor)."""
    m = res["machine"]
    b = res.get("budget", {})
    lines = [
        f"## Benchmark: {res['dataset']} ({res['profile']} profile)",
        "",
        f"Command: `{res.get('command', '')}`",
        "",
        f"Machine: {m.get('cpu_model', m.get('processor'))}, {m.get('affinity_cpus') or m.get('cpu_count')} CPU "
        f"core(s), torch {m['torch']} ({m['torch_threads']} threads), device {m['device']}"
        + (f" ({m['cuda']})" if m.get("cuda") else "")
        + f"; total {res.get('total_s') or 0:.0f} s wall, peak RSS {res.get('peak_rss_mb') or 0:.0f} MB.",
        "",
        f"Seeds {res.get('seeds')} (values are mean ± sd over seeds of the mean over genes). Training of every "
        f"learned method stops at the first of: {b.get('patience')} validation checks (every {b.get('eval_every')} "
        f"steps) without improvement, {b.get('max_steps')} steps, {b.get('max_time_s')} s. stdiff: "
        f"{res.get('n_samples')} posterior samples, ablations and knock-outs {res.get('ablation_samples')}.",
        "",
        "PCC/RMSE/SSIM score the mean (single samples are not scored by them); CRPS (fair ensemble estimator), "
        "interval coverage and spread-skill (rms sd·√((n+1)/n) / RMSE of the mean; 1 = calibrated, < 1 "
        f"over-confident) score the samples; a point forecast's CRPS is its MAE. Intervals: {res.get('interval_rule')}."
        f" Histology features: {res.get('features')}.",
    ]
    for run in res.get("runs", []):
        lines += ["", run_markdown(res["dataset"], run)]
    if res.get("status") != "complete":
        lines += ["", f"Status: {res.get('status')}"]
    return "\n".join(lines) + "\n"
