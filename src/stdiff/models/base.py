"""What every user-facing model of stdiff shares: its state, saving and loading, its hash and its provenance.

A model (:class:`~stdiff.models.DiffST`, :class:`~stdiff.models.AggregationConsistency`,
:class:`~stdiff.models.SelfSupervisedEnsemble`) says what it is in :meth:`BaseModel.state` (tensors and
plain Python only) and rebuilds itself in :meth:`BaseModel.from_state`; this base writes that state
atomically (:meth:`~BaseModel.save`), reads it back with ``torch.load(weights_only=True)`` and a check
of the file's format tag (:meth:`~BaseModel.load`), hashes it (:meth:`~BaseModel.model_hash`) and
describes the model for the outputs it writes (:meth:`~BaseModel.provenance`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._constants import Checkpoint, Key
from .._utils import logger

__all__ = ["BaseModel"]


@dataclass(frozen=True)
class LearnerCount:
    """What a model without a diffusion sampler reports as its "sampler": its learners and how they are made."""

    n_samples: int
    solver: str


@dataclass(frozen=True)
class ChunkGeometry:
    """The parts of a :class:`~stdiff.models.DiffSTConfig` that chunked prediction needs, for models without one.

    ``count_name``: the provenance key of the learner count (``"n_models"``, ``"n_folds"``).
    """

    tile_lr: int
    he_scale: int
    sampler: LearnerCount
    count_name: str = "n_models"

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python representation (provenance)."""
        return {"tile_lr": self.tile_lr, "he_scale": self.he_scale, self.count_name: self.sampler.n_samples}

    @classmethod
    def from_dict(cls, state: dict[str, Any], **overrides: Any) -> ChunkGeometry:
        """Rebuild from ``dataclasses.asdict`` of one (a checkpoint's ``config``)."""
        return cls(**{**state, "sampler": LearnerCount(**state["sampler"]), **overrides})


class BaseModel:
    """Base of stdiff's models: :meth:`save`, :meth:`load`, :meth:`model_hash`, :meth:`provenance`.

    Subclasses set :attr:`FORMAT` and implement :meth:`state` and :meth:`from_state`.
    """

    #: The checkpoint's format tag (checked on load).
    FORMAT: ClassVar[str] = ""
    #: Keys of :meth:`state` that do not change what the model predicts (left out of its hash).
    UNHASHED: ClassVar[tuple[str, ...]] = (Checkpoint.TRAIN_INFO,)

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (tensors and plain Python only)."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any], **checks: Any) -> BaseModel:
        """Rebuild a model from :meth:`state`."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` atomically (temporary file + rename)."""
        path = write_checkpoint({Checkpoint.FORMAT: self.FORMAT, **self.state()}, path)
        logger.info("Saved %s model to %s.", type(self).__name__, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, **checks: Any) -> BaseModel:
        """Load a model saved with :meth:`save` (``torch.load(weights_only=True)``: no code runs).

        ``checks`` are passed to :meth:`from_state` (e.g. ``genes=`` or ``config=`` of a
        :class:`~stdiff.models.DiffST`, checked against the saved ones).
        """
        state = read_checkpoint(path, expected_format=cls.FORMAT, what=cls.__name__)
        state.pop(Checkpoint.FORMAT)
        return cls.from_state(state, **checks)

    def model_hash(self) -> str:
        """SHA-256 (first 16 hex) of the model's state: weights, calibration, genes and settings."""
        h = hashlib.sha256()
        _hash_into(h, {k: v for k, v in self.state().items() if k not in self.UNHASHED})
        return h.hexdigest()[:16]

    def provenance(self, **call: Any) -> dict[str, Any]:
        """What an output records about the model that wrote it: its class and its hash.

        Subclasses add how they make the mean and the spread; ``call`` are the prediction call's options.
        """
        return {Key.prov.MODEL: type(self).__name__, Key.prov.MODEL_HASH: self.model_hash()}


def _hash_into(h, obj: Any) -> None:
    """Feed ``obj`` (nested dicts / lists of tensors, arrays and plain values) into the hash ``h``."""
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _hash_into(h, obj[k])
    elif isinstance(obj, list | tuple):
        h.update(b"[")
        for v in obj:
            _hash_into(h, v)
        h.update(b"]")
    elif hasattr(obj, "detach"):  # a tensor
        h.update(obj.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        h.update(np.ascontiguousarray(obj).tobytes())
    else:
        h.update(repr(obj).encode())


def read_checkpoint(path: str | os.PathLike, *, expected_format: str, what: str = "model") -> dict[str, Any]:
    """The state saved in ``path`` by :meth:`BaseModel.save`, its format tag checked.

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
        raise ValueError(f"{path} is a directory, not a stdiff model file; pass the file written by {what}.save.")
    hint = f"Pass a file written by {what}.save (or sd.tl.train(...).save(path)), or train a model with sd.tl.train."
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
    found = state.get(Checkpoint.FORMAT)
    if found != expected_format:
        held = f"format {found!r}" if found is not None else f"a dict with keys {sorted(map(str, state))[:8]}"
        raise ValueError(f"{path} is not a stdiff {what} model (format {expected_format!r}): it holds {held}. {hint}")
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
