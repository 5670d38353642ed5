"""The plain-PyTorch gene-graph head of stdiff before torch-geometric (commit fdca757), kept as a reference.

The PyG head (:class:`stdiff.models.GeneGraphHead`) is tested against it (same weights: the same
outputs within 1e-4) and ``benchmarks/graph_speed.py`` times both. Its state-dict keys are the PyG
GCN head's: a checkpoint of one loads into the other.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _feature_map(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``weight @ x + bias`` for ``x`` of shape ``(K, D, N)``: one batched multiply-add over the features."""
    return torch.baddbmm(bias.view(1, -1, 1), weight.expand(x.shape[0], -1, -1), x)


class GeneGraphConv(nn.Module):
    """One graph-convolution layer over genes, in the head's channel-first layout.

    ``out = W (P z) + b`` for each pixel: ``P`` (from :meth:`PlainGeneGraphHead.propagation`) mixes each
    gene's features with its neighbours', ``W`` (``lin.weight``, ``(D, D)``) maps the features and
    ``b`` (``bias``) is added; the same for every gene and pixel.

    ``lin.weight`` is Glorot-uniform, drawn after ``nn.Linear``'s own initialisation, which it replaces
    (two draws of ``D²`` values from the seeded generator); ``bias`` starts at zero.

    Parameters
    ----------
    dim
        Feature size per gene and pixel (input and output).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(dim))
        bound = math.sqrt(6.0 / (dim + dim))
        nn.init.uniform_(self.lin.weight, -bound, bound)

    def forward(self, z: torch.Tensor, propagation: torch.Tensor) -> torch.Tensor:
        """``(B, G, D, N)`` features and the ``(G, G)`` propagation → ``(B·G, D, N)`` update.

        Propagation over genes is one ``(G, G)`` product per image over all pixels and features at
        once; the linear map over features then commutes with it.
        """
        b, g, d, n = z.shape
        x = torch.matmul(propagation, z.reshape(b, g, d * n))
        return _feature_map(x.reshape(b * g, d, n), self.lin.weight, self.bias)


class PlainGeneGraphHead(nn.Module):
    """Output head: pixel features → per-gene features → GCN over the gene graph → one value per gene.

    Parameters
    ----------
    in_channels
        Channels of the decoder's last feature map.
    n_genes
        Number of genes (graph nodes).
    gene_dim
        Feature size per gene and pixel.
    layers
        Graph-convolution layers.
    adjacency
        ``(G, G)`` weighted adjacency; ``None`` (ablation) makes genes independent in the head.
    """

    def __init__(
        self, in_channels: int, n_genes: int, gene_dim: int, layers: int, adjacency: np.ndarray | None
    ) -> None:
        super().__init__()
        self.n_genes, self.gene_dim = n_genes, gene_dim
        self.to_genes = nn.Conv2d(in_channels, n_genes * gene_dim, 1)
        self.gene_embedding = nn.Parameter(torch.zeros(1, n_genes, gene_dim))
        nn.init.normal_(self.gene_embedding, std=0.02)
        if adjacency is not None:
            self.register_buffer("adjacency", torch.as_tensor(adjacency, dtype=torch.float32))
            self.convs = nn.ModuleList([GeneGraphConv(gene_dim) for _ in range(layers)])
        else:
            self.adjacency = None
            self.convs = nn.ModuleList([nn.Linear(gene_dim, gene_dim) for _ in range(layers)])
        self.out = nn.Linear(gene_dim, 1)
        # zero-initialised output: an untrained network predicts a zero residual, i.e. exactly the
        # base (stage A) or the input's clean part (stage B), and training can only move away from it
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.enabled = True  # False: the adjacency is zeroed (inference-time knock-out)

    def propagation(self) -> torch.Tensor | None:
        """The normalised ``(G, G)`` propagation matrix of every graph layer, or ``None`` (no graph).

        ``P = S^-1/2 (A + I) S^-1/2``: the adjacency ``A`` with every self-loop set to 1, each row and
        column divided by the square root of its weighted degree ``S`` (clamped at 1). Knocked out
        (:attr:`enabled` False) the adjacency is zeroed, which leaves the identity (each gene only
        its own features).
        """
        if self.adjacency is None:
            return None
        g = self.n_genes
        adj = self.adjacency if self.enabled else torch.zeros_like(self.adjacency)
        adj = adj.clone()
        idx = torch.arange(g, device=adj.device)
        adj[idx, idx] = 1.0
        d = adj.sum(-1).clamp(min=1).pow(-0.5)
        return d[:, None] * adj * d[None, :]

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, G, H, W)``.

        Works in the channel-first layout ``(B, G, D, H·W)``. Each layer adds
        ``SiLU(conv(z))`` to the features ``z`` (a residual connection): a :class:`GeneGraphConv`
        with the graph, a per-gene ``nn.Linear`` without it (genes independent).
        """
        b, _, h, w = feats.shape
        g, d, n = self.n_genes, self.gene_dim, h * w
        # the gene embedding is constant over pixels: added through the 1×1 convolution's bias
        bias = self.gene_embedding.reshape(-1) + self.to_genes.bias
        z = nn.functional.conv2d(feats, self.to_genes.weight, bias).view(b, g, d, n)
        prop = self.propagation()
        inplace = not torch.is_grad_enabled()  # the activation may overwrite its input only at inference
        for conv in self.convs:
            if prop is None:
                upd = _feature_map(z.reshape(b * g, d, n), conv.weight, conv.bias)
            else:
                upd = conv(z, prop)
            z = z + nn.functional.silu(upd, inplace=inplace).view(b, g, d, n)
        out = torch.matmul(self.out.weight, z).view(b, g, n) + self.out.bias
        return out.view(b, g, h, w)


def graph_from_adjacency(adj: np.ndarray, genes: list[str] | None = None):
    """The PyG ``Data`` of a dense weighted adjacency (edges in row-major order, as ``coexpression_graph``)."""
    from stdiff.models import gene_graph_data

    rows, cols = np.nonzero(adj)
    names = genes if genes is not None else [f"g{i}" for i in range(adj.shape[0])]
    return gene_graph_data(names, np.stack([rows, cols]), np.asarray(adj, np.float32)[rows, cols])


def dense_adjacency(graph) -> np.ndarray:
    """``(G, G)`` weighted adjacency of a gene graph ``Data``."""
    a = np.zeros((graph.num_nodes, graph.num_nodes), np.float32)
    a[graph.edge_index[0].numpy(), graph.edge_index[1].numpy()] = graph.edge_weight.numpy()
    return a
