"""Co-expression gene-correlation graph and graph convolution over genes (Diff-ST §2.4), in torch-geometric.

Nodes are genes; an edge joins two genes whose co-expression (Pearson correlation over the
training data's tissue pixels) is at least ``threshold``, keeping at most ``top_k`` neighbours per
gene; the edge weight is the correlation. The graph is a :class:`torch_geometric.data.Data`
(``edge_index``, ``edge_weight``, ``num_nodes`` and the gene names in ``genes``), so it can be
inspected, plotted (``torch_geometric.utils.to_networkx``) or reused in other PyG models.

Inside the denoiser every HR pixel carries a small feature vector per gene, and each layer of
:class:`GeneGraphHead` is a torch-geometric graph convolution over the genes of every pixel, the
same for all pixels: ``components.graph_conv`` picks GCN (``"gcn"``: the degree-normalised,
correlation-weighted sum of a gene's own and its neighbours' features, then a learned linear map),
GraphSAGE (``"sage"``: its own features and the mean of its neighbours', unweighted) or GAT
(``"gat"``: attention over the neighbours, the edges as a mask). A gene's output therefore depends
on its graph neighbours (through stacked layers, on theirs), and all genes are reconstructed
jointly. Panels below ``components.graph_sparse_from`` genes use PyG's dense layer (one
``(G, G)`` adjacency shared by the pixels: the fastest for tens to hundreds of genes), larger ones
its message-passing layer over ``edge_index`` (see :doc:`/model` for the measured cross-over).

torch-geometric is the ``graph`` extra (``pip install 'stdiff[graph]'``) and is imported only when
a graph is built or a graph layer is made: with ``components.use_gene_graph=False`` it never is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import GRAPH_CONVS

if TYPE_CHECKING:  # pragma: no cover
    from torch_geometric.data import Data

#: How to install torch-geometric with stdiff (named in the error when it is missing).
GRAPH_EXTRA = "pip install 'stdiff[graph]'"

_DENSE = {"gcn": "DenseGCNConv", "sage": "DenseSAGEConv", "gat": "DenseGATConv"}
_SPARSE = {"gcn": "GCNConv", "sage": "SAGEConv", "gat": "GATConv"}


def import_pyg() -> Any:
    """``torch_geometric``, or an ``ImportError`` that names the ``graph`` extra."""
    try:
        import torch_geometric
    except ImportError as err:
        raise ImportError(
            "The co-expression gene graph (components.use_gene_graph=True) is built in torch-geometric, which is "
            f"not installed: {GRAPH_EXTRA} (or pip install torch_geometric); or switch the component off with "
            "components.use_gene_graph=False."
        ) from err
    return torch_geometric


def gene_graph_data(genes: list[str], edge_index: Any, edge_weight: Any) -> Data:
    """The ``Data`` of a gene graph: ``edge_index`` ``(2, E)``, ``edge_weight`` ``(E,)``, ``genes`` as node names."""
    import_pyg()
    from torch_geometric.data import Data

    ei = torch.as_tensor(np.asarray(edge_index, dtype=np.int64)).reshape(2, -1)
    ew = torch.as_tensor(np.asarray(edge_weight, dtype=np.float32)).reshape(-1)
    if ew.numel() != ei.shape[1]:
        raise ValueError(f"edge_weight has {ew.numel()} values for {ei.shape[1]} edges.")
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= len(genes)):
        raise ValueError(f"edge_index refers to nodes outside the {len(genes)} genes.")
    graph = Data(edge_index=ei, edge_weight=ew, num_nodes=len(genes))
    graph.genes = list(genes)
    return graph


def coexpression_graph(
    expression: np.ndarray, genes: list[str], *, threshold: float = 0.2, top_k: int | None = 8
) -> Data:
    """Build the co-expression graph from ``expression`` of shape ``(G, n_observations)``.

    Parameters
    ----------
    expression
        Normalised expression, one row per gene (pixels or spots as columns).
    genes
        Gene names.
    threshold
        Minimum Pearson correlation for an edge.
    top_k
        Keep at most this many strongest neighbours per gene (then symmetrise); ``None`` keeps all.

    Returns
    -------
    A :class:`torch_geometric.data.Data` with one column of ``edge_index`` per directed edge (both
    directions of every undirected edge, in row-major order of the adjacency), ``edge_weight`` the
    correlations, ``num_nodes`` and ``genes``.
    """
    x = np.asarray(expression, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(genes):
        raise ValueError(f"expression must be (n_genes={len(genes)}, n_obs); got {x.shape}.")
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt((x**2).sum(axis=1))
    norm[norm == 0] = 1.0
    corr = (x @ x.T) / np.outer(norm, norm)
    np.fill_diagonal(corr, 0.0)
    adj = np.where(corr >= threshold, corr, 0.0)
    if top_k is not None and top_k < len(genes):
        keep = np.zeros_like(adj, dtype=bool)
        order = np.argsort(-adj, axis=1)[:, :top_k]
        rows = np.repeat(np.arange(len(genes)), order.shape[1])
        keep[rows, order.ravel()] = True
        adj = np.where(keep | keep.T, adj, 0.0)
    adj = adj.astype(np.float32)
    rows, cols = np.nonzero(adj)
    return gene_graph_data(list(genes), np.stack([rows, cols]), adj[rows, cols])


def gene_graph_to_dict(graph: Data) -> dict[str, list]:
    """Plain-Python form of a gene graph (checkpoints, provenance): genes, edge_index, edge_weight as lists."""
    return {
        "genes": list(graph.genes),
        "edge_index": graph.edge_index.tolist(),
        "edge_weight": graph.edge_weight.tolist(),
    }


def gene_graph_from_dict(d: dict[str, list]) -> Data:
    """Inverse of :func:`gene_graph_to_dict` (also reads the checkpoints of stdiff's plain-PyTorch graph)."""
    return gene_graph_data(list(d["genes"]), d["edge_index"], d["edge_weight"])


def gene_graph_edges(graph: Data) -> set[tuple[str, str]]:
    """The edges as unordered gene-name pairs."""
    genes = graph.genes
    return {tuple(sorted((genes[i], genes[j]))) for i, j in graph.edge_index.t().tolist() if i != j}  # type: ignore[misc]


def make_graph_conv(kind: str, dim: int, *, sparse: bool) -> nn.Module:
    """A torch-geometric graph convolution ``dim → dim``: ``kind`` in ``GRAPH_CONVS``, dense or message-passing.

    GCN's weight is Glorot-uniform and its bias zero (PyG's initialisation); GAT has one head.
    """
    if kind not in GRAPH_CONVS:
        raise ValueError(f"Unknown graph convolution {kind!r}; use one of {list(GRAPH_CONVS)}.")
    import_pyg()
    import torch_geometric.nn as pyg_nn

    cls = getattr(pyg_nn, (_SPARSE if sparse else _DENSE)[kind])
    if kind == "gat":
        return cls(dim, dim, heads=1)
    return cls(dim, dim)


class GeneGraphHead(nn.Module):
    """Output head: pixel features → per-gene features → graph convolutions over genes → one value per gene.

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
    graph
        The gene graph (:func:`coexpression_graph`); ``None`` (ablation) makes genes independent in
        the head (a per-gene ``nn.Linear`` per layer) and imports no torch-geometric.
    conv
        The PyG convolution: ``"gcn"``, ``"sage"`` or ``"gat"``.
    sparse_from
        Panels of at least this many genes use the message-passing layer over ``edge_index``, smaller
        ones the dense layer over a shared ``(G, G)`` adjacency.
    """

    def __init__(
        self,
        in_channels: int,
        n_genes: int,
        gene_dim: int,
        layers: int,
        graph: Data | None,
        *,
        conv: str = "gcn",
        sparse_from: int = 2000,
    ) -> None:
        super().__init__()
        self.n_genes, self.gene_dim, self.conv = n_genes, gene_dim, conv
        self.to_genes = nn.Conv2d(in_channels, n_genes * gene_dim, 1)
        self.gene_embedding = nn.Parameter(torch.zeros(1, n_genes, gene_dim))
        nn.init.normal_(self.gene_embedding, std=0.02)
        self.sparse = graph is not None and n_genes >= sparse_from
        for name in ("adjacency", "edge_index", "edge_weight"):  # the graph: dense or as edges (buffers)
            self.register_buffer(name, None)
        if graph is None:
            self.convs = nn.ModuleList([nn.Linear(gene_dim, gene_dim) for _ in range(layers)])
        else:
            if graph.num_nodes != n_genes:
                raise ValueError(f"The gene graph has {graph.num_nodes} nodes for {n_genes} genes.")
            if self.sparse:
                self.edge_index, self.edge_weight = graph.edge_index.clone(), graph.edge_weight.clone()
            else:
                from torch_geometric.utils import to_dense_adj

                adj = to_dense_adj(graph.edge_index, edge_attr=graph.edge_weight, max_num_nodes=n_genes)[0]
                self.adjacency = adj
            self.convs = nn.ModuleList([make_graph_conv(conv, gene_dim, sparse=self.sparse) for _ in range(layers)])
        self.out = nn.Linear(gene_dim, 1)
        # zero-initialised output: an untrained network predicts a zero residual, i.e. exactly the
        # base (stage A) or the input's clean part (stage B), and training can only move away from it
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.enabled = True  # False: no edges (inference-time knock-out)

    @property
    def has_graph(self) -> bool:
        """Whether the head convolves over a gene graph (``False``: the ablation, genes independent)."""
        return self.adjacency is not None or self.edge_index is not None

    def _graph_conv(self, conv: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """One PyG layer on ``z`` ``(B, N, G, D)`` (genes as nodes, the same graph for every pixel).

        Knocked out (:attr:`enabled` False) the graph has no edges: each gene sees only its own features.
        """
        b, n, g, d = z.shape
        if not self.sparse:
            adj = self.adjacency if self.enabled else torch.zeros_like(self.adjacency)
            if self.conv == "sage":
                adj = (adj > 0).to(z.dtype)  # GraphSAGE's mean over the neighbours, unweighted
            if self.conv == "gat":  # DenseGATConv takes one batch dimension
                return conv(z.reshape(b * n, g, d), adj).view(b, n, g, d)
            return conv(z, adj)
        ei, ew = self.edge_index, self.edge_weight
        if not self.enabled:
            ei, ew = ei[:, :0], ew[:0]
        if self.conv == "gat":  # GATConv takes no batched node features: the pixels as disjoint copies
            offsets = torch.arange(b * n, device=z.device).repeat_interleave(ei.shape[1]) * g
            return conv(z.reshape(-1, d), ei.repeat(1, b * n) + offsets).view(b, n, g, d)
        x = z.reshape(b * n, g, d)  # static graph: the pixels as a batch dimension of the node features
        out = conv(x, ei, ew) if self.conv == "gcn" else conv(x, ei)
        return out.view(b, n, g, d)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, G, H, W)``.

        Works in the node-feature layout ``(B, H·W, G, D)``. Each layer adds ``SiLU(conv(z))`` to the
        features ``z`` (a residual connection): a PyG graph convolution with the graph, a per-gene
        ``nn.Linear`` without it (genes independent).
        """
        b, _, h, w = feats.shape
        g, d, n = self.n_genes, self.gene_dim, h * w
        # the 1×1 convolution as a linear map of each pixel's features; the gene embedding is constant
        # over pixels and added through its bias
        bias = self.gene_embedding.reshape(-1) + self.to_genes.bias
        z = F.linear(feats.flatten(2).transpose(1, 2), self.to_genes.weight.flatten(1), bias).view(b, n, g, d)
        inplace = not torch.is_grad_enabled()  # the activation may overwrite its input only at inference
        for conv in self.convs:
            upd = self._graph_conv(conv, z) if self.has_graph else conv(z)
            z = z + F.silu(upd, inplace=inplace)
        out = F.linear(z, self.out.weight, self.out.bias)  # (B, N, G, 1)
        return out.view(b, h, w, g).permute(0, 3, 1, 2).contiguous()
