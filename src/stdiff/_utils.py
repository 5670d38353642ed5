"""Small shared helpers: logging, data directory, device and seed handling."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger("stdiff")

DATA_DIR_ENV = "STDIFF_DATA_DIR"


def data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """Return the local data directory: the argument, else ``$STDIFF_DATA_DIR``, else ``None``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; validate anything else."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'.") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; use device='cpu'.")
    return dev


def torch_generator(seed: int | None, device: Any = "cpu") -> torch.Generator:
    """A seeded :class:`torch.Generator` on ``device`` (a fresh random seed when ``seed`` is None)."""
    import torch

    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def array_fingerprint(he: np.ndarray) -> str:
    """Cheap identity of an image: shape, dtype, strides and a hash of a sparse pixel sample."""
    step = max(1, int(np.sqrt(he.shape[-1] * he.shape[-2] / 4096)))
    sample = np.ascontiguousarray(he[:, ::step, ::step])
    digest = hashlib.blake2b(sample.tobytes(), digest_size=12).hexdigest()
    return f"{he.shape}|{he.dtype}|{he.strides}|{digest}"


def plain(obj: Any, *, nan_as_none: bool = False) -> Any:
    """``obj`` as plain Python (dicts, lists, numbers, strings): what checkpoints and JSON can hold.

    Keys become strings, arrays lists, numpy scalars Python numbers; with ``nan_as_none`` non-finite
    floats become ``None`` (JSON has no NaN).
    """
    if isinstance(obj, dict):
        return {str(k): plain(v, nan_as_none=nan_as_none) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v, nan_as_none=nan_as_none) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist(), nan_as_none=True) if nan_as_none else obj.tolist()
    if isinstance(obj, np.generic):
        obj = obj.item()
    if nan_as_none and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def one_blas_thread(func):
    """Run ``func`` with the BLAS libraries (numpy's, scipy's) on one thread.

    For code made of many small matrix products (the spot-level fits): a second BLAS thread gains
    little there, and on a busy machine idle BLAS threads spin while waiting for a core, which
    multiplied the CPU time of such a fit up to ~100×. One thread also makes its floating-point sums
    independent of the machine's core count. torch's own threads are not affected.
    """
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)

    return wrapper
