"""Summary tables (markdown) of benchmark result JSONs, for the README and docs/benchmarks.md.

Usage: ``python benchmarks/summary.py benchmarks/results/{synthetic,her2st,merfish}_cpu.json``.
Files of the same dataset given later replace the earlier file's rows of the methods they ran
(``python benchmarks/summary.py her2st_cpu.json her2st_rerun.json``; ``her2st_rerun.json:unet,stdiff`` takes
only those rows); the table says which rows came from where.
``--stale m1,m2`` leaves out those methods' rows of a merged dataset that were not re-run.
One table per track: mean ± sd over seeds of the mean per-gene PCC, RMSE, CRPS, 90% coverage and
spread-skill for every method, datasets side by side for PCC, then a per-dataset detail table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = (
    "bicubic", "nearest", "nearest_masked", "ridge", "istar", "unet", "stdiff", "stdiff_1sample",
    "stdiff_no_modulation", "stdiff_no_cross_attention", "stdiff_no_gene_graph",
    "stdiff_with_modulation", "stdiff_with_cross_attention", "stdiff_with_gene_graph",
    "stdiff_ko_modulation", "stdiff_ko_cross_attention", "stdiff_ko_gene_graph",
)  # fmt: skip


def _pm(m: dict, s: dict, key: str, nd: int = 3) -> str:
    v, e = m.get(key), s.get(key)
    if v is None or v != v:
        return "–"
    return f"{v:.{nd}f}" if e is None or e != e else f"{v:.{nd}f} ± {e:.{nd}f}"


def load(paths: list[str]) -> dict[str, dict]:
    """``{dataset: result}`` of the JSON files.

    Several files of one dataset are merged method by method (per track): a later file's rows
    replace an earlier file's, e.g. a re-run of the learned methods after a model change on top of
    the full run. ``path.json:m1,m2`` takes only those methods' rows from that file.
    ``result["sources"]`` records which file gave which rows.
    """
    out: dict[str, dict] = {}
    for spec in paths:
        p, _, only = spec.partition(":")
        res = json.loads(Path(p).read_text())
        if only:  # ``file.json:m1,m2``: take only these methods' rows from this file
            keep = set(only.split(","))
            for v in res["runs"][0]["tracks"].values():
                v["methods"] = {m: r for m, r in v.get("methods", {}).items() if m in keep}
        name = res["dataset"]
        rows = {tr: sorted(v.get("methods", {})) for tr, v in res["runs"][0]["tracks"].items()}
        if name not in out:
            res["sources"] = [(Path(p).name, res["command"], rows)]
            out[name] = res
            continue
        base = out[name]
        if base["runs"][0]["factor"] != res["runs"][0]["factor"] or base.get("seeds") != res.get("seeds"):
            raise ValueError(f"{p}: another factor or other seeds than the first {name} file; not merged.")
        for tr, v in res["runs"][0]["tracks"].items():
            base["runs"][0]["tracks"].setdefault(tr, {"methods": {}})["methods"].update(v.get("methods", {}))
        base["sources"].append((Path(p).name, res["command"], rows))
    return out


def pcc_table(results: dict[str, dict], track: str) -> str:
    """Mean PCC ± sd over seeds, methods × datasets."""
    names = list(results)
    lines = ["| method | " + " | ".join(f"{n} ×{results[n]['runs'][0]['factor']}" for n in names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for meth in ORDER:
        cells, seen = [], False
        for n in names:
            tr = results[n]["runs"][0]["tracks"].get(track, {})
            r = tr.get("methods", {}).get(meth)
            if r is None:
                cells.append("–")
                continue
            seen = True
            cells.append(_pm(r["mean"], r["sd"], "pcc"))
        if seen:
            lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(result: dict, track: str) -> str:
    """All summary metrics of one dataset and track."""
    run = result["runs"][0]
    tr = run["tracks"].get(track)
    if tr is None:
        return ""
    lines = [
        "| method | PCC | RMSE | SSIM | CRPS | coverage 90% | coverage 50% | spread-skill | train steps | train (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for meth in ORDER:
        r = tr["methods"].get(meth)
        if r is None:
            continue
        m, s = r["mean"], r["sd"]
        steps = r.get("train_steps")
        steps = "–" if not steps else (f"{steps:.0f}" if isinstance(steps, int | float) else str(steps))
        ts = r.get("train_s")
        ts = "–" if not ts else f"{ts:.0f}"
        lines.append(
            f"| {meth} | {_pm(m, s, 'pcc')} | {_pm(m, s, 'rmse')} | {_pm(m, s, 'ssim')} | {_pm(m, s, 'crps', 4)} | "
            f"{_pm(m, s, 'coverage90', 2)} | {_pm(m, s, 'coverage50', 2)} | {_pm(m, s, 'spread_skill', 2)} | "
            f"{steps} | {ts} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the summary of the result files named in ``argv``.

    ``--stale a,b``: in a dataset merged from several files, leave out these methods' rows when
    they come from an earlier file (i.e. were not re-run after the change the later file measures).
    """
    stale: set[str] = set()
    if "--stale" in argv:
        i = argv.index("--stale")
        stale = set(argv[i + 1].split(","))
        argv = argv[:i] + argv[i + 2 :]
    results = load(argv)
    for res in results.values():
        if len(res["sources"]) < 2:
            continue
        for track, tr in res["runs"][0]["tracks"].items():
            rerun = {m for _, _, rows in res["sources"][1:] for m in rows.get(track, [])}
            for meth in stale - rerun:
                tr.get("methods", {}).pop(meth, None)
    out = []
    for track in ("reference", "self_supervised"):
        out += [f"### {track} track: mean per-gene PCC (mean ± sd over seeds)", "", pcc_table(results, track), ""]
        for name, res in results.items():
            t = detail_table(res, track)
            if t:
                seeds = res.get("seeds")
                out += [f"#### {name}, {track} (seeds {seeds}, {res['profile']} profile)", "", t, ""]
                if len(res["sources"]) > 1:
                    shown = set(res["runs"][0]["tracks"].get(track, {}).get("methods", {}))
                    last = {m: i for i, (_, _, rows) in enumerate(res["sources"]) for m in rows.get(track, [])}
                    for i, (src, cmd, rows) in enumerate(res["sources"]):
                        kept = [m for m in rows.get(track, []) if last[m] == i and m in shown]
                        out.append(f"Rows from {src}: {', '.join(kept) or 'none'} (`{cmd}`).")
                    out.append("")
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
