"""Tile machinery of the tile-based baselines: training windows, stitched prediction, early-stopped fitting.

Windows come from Diff-ST's own preparation (normalised LR/HR, bicubic base, histology, masks), so a
baseline sees exactly the model's inputs. :func:`fit_loop` is the one training loop of the tile-based
baselines (AdamW, gradient clipping, EMA) with the benchmark's stopping rule (:class:`Budget`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...models.diffst import _augment, _hann, _pad_section, _Prepared
from ...pp import Normalizer, Section, tile_positions
from ._base import Budget


class Windows:
    """Training windows of several sections: LR/HR in ``z``, bicubic base, histology, masks."""

    def __init__(self, sections: Sequence[Section], normalizer: Normalizer, tile_lr: int, min_tissue: float):
        self.prepared = [_Prepared(s, normalizer, with_truth=True) for s in sections]
        self.t = int(tile_lr)
        pools = []
        for i, p in enumerate(self.prepared):
            pos = tile_positions(p.section, self.t, 1, min_tissue=min_tissue)
            pools.extend((i, r, c) for r, c in pos)
        if not pools:
            raise ValueError(
                f"No training tile of {tile_lr}×{tile_lr} LR pixels with ≥{min_tissue:.0%} tissue in the training "
                "sections; use a smaller tile_lr."
            )
        self.pools = np.asarray(pools)

    def window(self, i: int, r: int, c: int) -> dict[str, np.ndarray]:
        p, t = self.prepared[i], self.t
        w = p.window(r, c, t)
        w["z_lr"] = p.z_lr[:, r : r + t, c : c + t]
        w["mask_lr"] = p.section.mask_lr[None, r : r + t, c : c + t].astype(np.float32)
        return w

    def batch(self, rng: np.random.Generator, size: int, augment: bool, device) -> dict[str, torch.Tensor]:
        picks = self.pools[rng.integers(len(self.pools), size=size)]
        items = []
        for i, r, c in picks:
            w = self.window(i, r, c)
            items.append(_augment(w, rng) if augment else w)
        return _stack(items, device)

    def fixed_batches(self, size: int, device, limit: int = 64) -> list[dict[str, torch.Tensor]]:
        """Half-overlapping windows (evenly chosen, at most ``limit``), unaugmented: a fixed validation set."""
        picks = []
        for i, p in enumerate(self.prepared):
            picks += [(i, r, c) for r, c in tile_positions(p.section, self.t, max(1, self.t // 2), min_tissue=0.05)]
        if not picks:
            picks = [tuple(x) for x in self.pools]
        idx = np.unique(np.linspace(0, len(picks) - 1, min(limit, len(picks))).round().astype(int))
        items = [self.window(*picks[k]) for k in idx]
        return [_stack(items[b : b + size], device) for b in range(0, len(items), size)]


def _stack(items: list[dict[str, np.ndarray]], device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([it[k] for it in items])).to(device) for k in items[0]}


def stitch(
    section: Section,
    normalizer: Normalizer,
    tile_lr: int,
    fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Predict a whole section with half-overlapping tiles blended by a Hann window (like Diff-ST).

    ``fn`` maps a batch of windows (``lr_up``, ``base``, ``mask``, ``he`` in [0, 1]) to normalised HR
    tiles ``(B, G, T, T)``. Returns ``(G, H, W)`` (0 off tissue). Only deterministic outputs are
    blended this way; samples are never blended.
    """
    t = int(tile_lr)
    h, w = section.shape_lr
    ph, pw = max(0, t - h), max(0, t - w)
    sec = _pad_section(section, ph, pw) if (ph or pw) else section
    prep = _Prepared(sec, normalizer, with_truth=False)
    pos = tile_positions(sec, t, max(1, t // 2), min_tissue=0.0, cover=True)
    f = sec.factor
    T = t * f
    win = np.outer(_hann(T), _hann(T)).astype(np.float32)
    G = len(sec.genes)
    H, W = sec.shape_lr[0] * f, sec.shape_lr[1] * f
    acc = np.zeros((G, H, W), np.float32)
    acc_w = np.zeros((H, W), np.float32)
    for b0 in range(0, len(pos), batch_size):
        chunk = pos[b0 : b0 + batch_size]
        ws = [prep.window(r, c, t) for r, c in chunk]
        batch = {k: torch.from_numpy(np.stack([x[k] for x in ws])).to(device) for k in ("lr_up", "base", "mask")}
        batch["he"] = torch.from_numpy(np.stack([x["he"] for x in ws])).to(device).float() / 255.0
        with torch.no_grad():
            z = fn(batch).float().cpu().numpy()
        for k, (r, c) in enumerate(chunk):
            acc[:, r * f : r * f + T, c * f : c * f + T] += z[k] * win
            acc_w[r * f : r * f + T, c * f : c * f + T] += win
    out = acc / np.maximum(acc_w, 1e-8) * sec.mask_hr.astype(np.float32)
    return out[:, : h * f, : w * f]


def _ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pn in zip(ema.parameters(), net.parameters()):
            pe.lerp_(pn, 1 - decay)
        for be, bn in zip(ema.buffers(), net.buffers()):
            be.copy_(bn)


def fit_loop(
    model: Any,
    sections: Sequence[Section],
    validation: Sequence[Section] | None,
    *,
    budget: Budget,
    seed: tuple[int, int],
    device,
    loss_fn: Callable[..., tuple[torch.Tensor, torch.Tensor | float]],
) -> dict[str, Any]:
    """Train ``model.net`` (EMA in ``model.ema``) on random tiles until the budget's stopping rule fires.

    ``loss_fn(net, batch, step, total)`` returns ``(loss, extra)``; ``loss + extra`` is minimised,
    ``loss`` is logged in ``model.history`` and, with the EMA weights on fixed validation windows,
    decides early stopping. The EMA weights of the best validation check are restored. Returns
    ``{"steps", "best_step", "seconds", "cpu_seconds", "stopped", "best_validation_loss"}``.
    """
    cfg = model.config
    data = Windows(sections, model.normalizer, cfg.tile_lr, cfg.min_tissue)
    val = None
    if validation:
        val = Windows(validation, model.normalizer, cfg.tile_lr, 0.05).fixed_batches(cfg.batch_size, device)
    rng = np.random.default_rng(list(seed))
    net, ema = model.net.to(device).train(), model.ema.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    total = int(budget.max_steps)
    best, best_step, best_state, bad = np.inf, None, None, 0
    stopped = "max_steps"
    t0, c0 = time.perf_counter(), time.process_time()
    step = 0
    while step < total:
        b = data.batch(rng, cfg.batch_size, cfg.augment, device)
        loss, extra = loss_fn(net, b, step, total)
        opt.zero_grad(set_to_none=True)
        (loss + extra).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        _ema_update(ema, net, min(cfg.ema_decay, (1 + step) / (10 + step)))
        model.history.append(float(loss.detach()))
        step += 1
        if val is not None and (step % budget.eval_every == 0 or step == total):
            ema.eval()
            with torch.no_grad():
                v = float(np.mean([float(loss_fn(ema, vb, total, total)[0]) for vb in val]))
            model.validation.append((step, v))
            if v < best - 1e-6:
                best, best_step, bad = v, step, 0
                best_state = copy.deepcopy(ema.state_dict())
            else:
                bad += 1
                if bad >= budget.patience:
                    stopped = "early_stopping"
                    break
        if time.perf_counter() - t0 > budget.max_time_s:
            stopped = "time_cap"
            break
    if best_state is not None:
        ema.load_state_dict(best_state)
    model.net.cpu().eval()
    model.ema.cpu().eval()
    return {
        "steps": step, "best_step": best_step if best_state is not None else step,
        "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "stopped": stopped,
        "best_validation_loss": None if best_state is None else best,
    }  # fmt: skip
