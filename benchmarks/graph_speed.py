"""Time the gene graph: PyG's dense and sparse layers against the plain-PyTorch head they replaced.

1. **Training steps** of stage A's network (``cpu`` preset, gene graph on; 8 tiles of 20 × 20 HR
   pixels, ×5, histology at 4 px per HR pixel) at 50 and 300 genes: forward, loss, backward and
   AdamW step, with the head as

   - ``plain``: stdiff's plain-PyTorch GCN head before torch-geometric (``tests/_plain_gene_graph.py``,
     the same weights),
   - ``pyg_dense``: PyG's ``DenseGCNConv`` (what panels below ``components.graph_sparse_from`` get),
   - ``pyg_sparse``: PyG's ``GCNConv`` over ``edge_index`` (``graph_sparse_from=0``),
   - ``no_graph``: the ablation's independent per-gene heads (the ``cpu`` default), for scale, and
     ``plain_no_graph``: the same in the plain head's layout (before torch-geometric).

   The variants run in turn within each repetition, so a load change on a shared machine hits all;
   besides the median time of each, the median over repetitions of each variant's time over
   ``plain``'s in the same repetition is reported (``ratio_to_plain``).
2. **Where sparse overtakes dense**: the head alone (forward + backward, 2 layers, 16 features,
   200 pixels) from 100 to 3000 genes; the graph has 8 neighbours per gene at most, as in the model.

    python benchmarks/graph_speed.py --threads 1 --out benchmarks/results/graph_speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _plain_gene_graph import PlainGeneGraphHead, dense_adjacency

from stdiff.models import DiffSTConfig, DiffSTUNet, GeneGraphHead, coexpression_graph

VARIANTS = ("plain", "pyg_dense", "pyg_sparse", "no_graph", "plain_no_graph")


def random_graph(n_genes: int, seed: int = 0):
    """A co-expression graph of ``n_genes`` genes driven by 6 latent programs (≤ 8 neighbours each)."""
    rng = np.random.default_rng(seed)
    expr = rng.normal(size=(n_genes, 6)) @ rng.normal(size=(6, 2000)) + rng.normal(size=(n_genes, 2000))
    return coexpression_graph(expr, [f"g{i}" for i in range(n_genes)])


def build_net(variant: str, n_genes: int, graph, cond: int) -> DiffSTUNet:
    """Stage A's network of the ``cpu`` preset with the head of ``variant`` (same seed, same weights)."""
    on = not variant.endswith("no_graph")
    comp = {"use_gene_graph": on, "graph_sparse_from": 0 if variant == "pyg_sparse" else 10**9}
    config = DiffSTConfig.preset("cpu", components=comp)
    torch.manual_seed(0)
    net = DiffSTUNet(config, n_genes, cond_channels=cond, graph=graph if on else None, patch_px=4)
    if variant.startswith("plain"):
        head = net.head
        plain = PlainGeneGraphHead(head.to_genes.in_channels, n_genes, head.gene_dim, len(head.convs),
                                   dense_adjacency(graph) if on else None)  # fmt: skip
        plain.load_state_dict(head.state_dict())
        net.head = plain
    return net


def time_training_steps(genes: list[int], reps: int, steps: int) -> dict:
    """Median seconds per training step of each variant at each panel size."""
    out = {}
    for g in genes:
        graph = random_graph(g)
        cond = 2 * g + 1 + 16
        gen = torch.Generator().manual_seed(0)
        batch = (torch.randn(8, cond, 20, 20, generator=gen), torch.ones(8, 1, 20, 20),
                 torch.rand(8, 3, 80, 80, generator=gen), torch.randn(8, g, 20, 20, generator=gen))  # fmt: skip
        nets = {v: build_net(v, g, graph, cond) for v in VARIANTS}
        opts = {v: torch.optim.AdamW(n.parameters(), lr=1e-3) for v, n in nets.items()}
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}

        def step(v: str, nets=nets, opts=opts, batch=batch) -> None:
            pred, extra = nets[v](*batch[:3])
            loss = (pred - batch[3]).square().mean() + extra
            opts[v].zero_grad(set_to_none=True)
            loss.backward()
            opts[v].step()

        for v in VARIANTS:  # warm-up
            step(v)
        for _ in range(reps):
            for v in VARIANTS:
                t0 = time.perf_counter()
                for _ in range(steps):
                    step(v)
                times[v].append((time.perf_counter() - t0) / steps)
        ratio = {v: statistics.median(a / b for a, b in zip(t, times["plain"])) for v, t in times.items()}
        out[g] = {"edges": int(graph.num_edges), "median_s": {v: statistics.median(t) for v, t in times.items()},
                  "min_s": {v: min(t) for v, t in times.items()}, "ratio_to_plain": ratio}  # fmt: skip
        cells = ", ".join(f"{v} {out[g]['median_s'][v]:.3f} ({ratio[v]:.2f})" for v in VARIANTS)
        print(f"{g} genes ({graph.num_edges} edges), s per step (× plain): {cells}", flush=True)
    return out


def time_heads(genes: list[int], reps: int) -> dict:
    """Median seconds of a forward and backward pass of the head alone, dense and sparse."""
    out = {}
    feats = torch.randn(2, 24, 10, 10)
    for g in genes:
        graph = random_graph(g)
        heads = {"pyg_dense": GeneGraphHead(24, g, 16, 2, graph, sparse_from=10**9),
                 "pyg_sparse": GeneGraphHead(24, g, 16, 2, graph, sparse_from=0),
                 "plain": PlainGeneGraphHead(24, g, 16, 2, dense_adjacency(graph))}  # fmt: skip
        for h in heads.values():
            torch.nn.init.normal_(h.out.weight)
        times: dict[str, list[float]] = {k: [] for k in heads}
        for _ in range(reps + 1):
            for k, h in heads.items():
                t0 = time.perf_counter()
                h(feats).square().sum().backward()
                times[k].append(time.perf_counter() - t0)
        out[g] = {k: statistics.median(t[1:]) for k, t in times.items()}
        out[g]["edges"] = int(graph.num_edges)
        print(f"head, {g} genes ({graph.num_edges} edges): "
              + ", ".join(f"{k} {out[g][k]:.4f} s" for k in heads), flush=True)  # fmt: skip
    return out


def cpu_name() -> str:
    """The CPU's model name (Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", default="50,300", help="panel sizes of the training-step timing")
    ap.add_argument("--head-genes", default="100,300,1000,1500,2000,3000", help="panel sizes of the head scan")
    ap.add_argument("--reps", type=int, default=7, help="repetitions (the median is reported)")
    ap.add_argument("--steps", type=int, default=3, help="training steps per repetition")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s)",
        "date": time.strftime("%Y-%m-%d"),
        "load_average_at_start": os.getloadavg()[0],
        "train_step_s": time_training_steps([int(g) for g in args.genes.split(",")], args.reps, args.steps),
        "head_fwd_bwd_s": time_heads([int(g) for g in args.head_genes.split(",")], args.reps),
    }
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
