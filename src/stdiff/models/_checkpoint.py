"""Saving and loading a Diff-ST model.

Its state as plain Python and tensors, written atomically, read back with an error that says so when
the file is not a stdiff model.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import DiffSTConfig
    from .diffst import DiffST


def read_checkpoint(path: str | os.PathLike, *, expected_format: str) -> dict[str, Any]:
    """The state dict saved in ``path`` by :meth:`stdiff.models.DiffST.save`.

    Loads with ``torch.load(weights_only=True)`` (no arbitrary code runs) and checks the file's
    ``format`` tag.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is not a stdiff model: unreadable (corrupt, truncated, random bytes), a pickle of
        another object, or a torch file holding something else (the message says which).
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No stdiff model at {path}.")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a stdiff model file; pass the file written by DiffST.save.")
    hint = "Pass a file written by DiffST.save (or sd.tl.train(...).save(path)), or train a model with sd.tl.train."
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} is not a stdiff model: torch cannot read it as a weights-only checkpoint "
            f"({type(err).__name__}: {first[:200]}). It may be corrupt or truncated, or a pickle of another "
            f"object. {hint}"
        ) from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a stdiff model: it holds a {type(state).__name__}, not a model state. {hint}")
    if state.get("format") != expected_format:
        found = state.get("format")
        what = f"format {found!r}" if found is not None else f"a dict with keys {sorted(map(str, state))[:8]}"
        raise ValueError(f"{path} is not a stdiff Diff-ST model (format {expected_format!r}): it holds {what}. {hint}")
    return state


def write_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with ``torch.save`` to ``path`` atomically (temporary file + rename)."""
    import tempfile

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def plain(obj: Any) -> Any:
    """Checkpoint-safe (``weights_only``) plain Python: dicts, lists, floats, ints, strings."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def model_state(model: DiffST, fmt: str) -> dict[str, Any]:
    """Everything needed to rebuild ``model`` (tensors and plain Python only), tagged ``fmt``."""
    info = {k: v for k, v in model.train_info.items() if k not in ("stage_a", "stage_b")}
    for k in ("stage_a", "stage_b"):
        if k in model.train_info:
            info[k] = {kk: vv for kk, vv in model.train_info[k].items() if kk != "history"}
    return {
        "format": fmt,
        "genes": list(model.genes),
        "config": model.config.to_dict(),
        "factor": model.factor,
        "lr_um": model.lr_um,
        "platform": model.platform,
        "normalizer": model.normalizer.to_dict(),
        "graph": model.graph.to_dict(),
        "image_channels": model.image_channels,
        "residual_scale": model.residual_scale,
        "feature_stats": model.feature_stats,
        "base_model": None if model.base_model is None else model.base_model.state(),
        "gene_sigma": model.gene_sigma.tolist(),
        "spread_scale": model.spread_scale.tolist(),
        "sampling_steps": model.sampling_steps,
        "mean_net": model.mean_net.state_dict(),
        "residual_net": model.residual_net.state_dict(),
        "train_info": plain(info),
    }


def model_from_state(
    cls: type[DiffST],
    state: dict[str, Any],
    *,
    genes: Sequence[str] | None = None,
    config: DiffSTConfig | None = None,
) -> DiffST:
    """Rebuild a model from :func:`model_state`, checking a requested gene panel and config against it."""
    import numpy as np

    from ..pp import Normalizer
    from .aggregation_consistency import AggregationConsistency
    from .config import DiffSTConfig
    from .gene_graph import GeneGraph

    saved_cfg = DiffSTConfig.from_dict(state["config"])
    if config is not None and config != saved_cfg:
        diff = {k: (v, saved_cfg.to_dict()[k]) for k, v in config.to_dict().items() if saved_cfg.to_dict()[k] != v}
        raise ValueError(f"Config differs from the checkpoint's (given, saved): {diff}.")
    if genes is not None:
        missing = [g for g in genes if g not in state["genes"]]
        if missing:
            raise KeyError(
                f"Genes {missing[:10]} are not in the model's panel of {len(state['genes'])} genes "
                f"(e.g. {state['genes'][:5]}); retrain with them or drop them from genes=."
            )
    base = state.get("base_model")
    model = cls(
        state["genes"], config=saved_cfg, factor=state["factor"], lr_um=state["lr_um"],
        normalizer=Normalizer.from_dict(state["normalizer"]), graph=GeneGraph.from_dict(state["graph"]),
        image_channels=state["image_channels"], residual_scale=state["residual_scale"],
        feature_stats=state.get("feature_stats"),
        base_model=None if base is None else AggregationConsistency.from_state(base),
        platform=state.get("platform", "square"),
    )  # fmt: skip
    model.mean_net.load_state_dict(state["mean_net"])
    model.residual_net.load_state_dict(state["residual_net"])
    model.gene_sigma = np.asarray(state["gene_sigma"], np.float32)
    model.spread_scale = np.asarray(state["spread_scale"], np.float32)
    model.sampling_steps = int(state["sampling_steps"])
    model.train_info = dict(state.get("train_info") or {})
    model.mean_net.eval()
    model.residual_net.eval()
    return model
