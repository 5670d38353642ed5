"""Reading a saved model file, with an error that says so when the file is not a stdiff model."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any


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
