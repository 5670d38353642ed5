"""The Diff-ST model: training, posterior sampling, stitching, save and load.

What is diffused: the HR map in the normalised space (:class:`~stdiff.pp.Normalizer`) *minus* the
bicubic upsampling of the normalised LR map, divided by the residual's standard deviation on the
training tissue. The network predicts ``v`` (v-prediction, Salimans & Ho 2022) under a 1000-step
cosine schedule. Starting from the bicubic map means an untrained model already equals the bicubic
baseline and training only has to learn the correction that the histology and the LR context
explain.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._utils import logger, resolve_device, torch_generator
from ..pp._normalize import Normalizer
from ..pp._tiling import Section, Tiles, fit_normalizer, tile_positions
from .config import DiffSTConfig
from .gene_graph import GeneGraph, coexpression_graph
from .scheduler import DDPMScheduler, make_scheduler
from .unet import DiffSTUNet

FORMAT = "stdiff-diffst-1"


def upsample_lr(z_lr: np.ndarray | torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic upsampling of normalised LR maps ``(..., G, h, w)`` by ``factor``, clamped at 0."""
    x = torch.as_tensor(z_lr, dtype=torch.float32)
    squeeze = x.ndim == 3
    if squeeze:
        x = x[None]
    up = F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False).clamp(min=0)
    return up[0] if squeeze else up


class _Prepared:
    """A section in the model's space: normalised LR/HR, bicubic base, histology, masks."""

    def __init__(self, section: Section, normalizer: Normalizer, with_truth: bool) -> None:
        norm = normalizer.subset(section.genes) if normalizer.genes != section.genes else normalizer
        self.section = section
        self.f = section.factor
        self.z_lr = norm.transform(section.lr, factor=section.factor)
        self.base = upsample_lr(self.z_lr, section.factor).numpy()
        self.z_hr = norm.transform(section.hr) if (with_truth and section.hr is not None) else None
        self.mask_hr = section.mask_hr.astype(np.float32)
        self.mask_truth = section.truth_mask.astype(np.float32)
        self.lr_up = self.base * self.mask_hr[None]
        he = section.he
        self.he = he if he.dtype == np.uint8 else np.clip(he, 0, 255).astype(np.uint8)
        self.s = section.factor * section.he_scale

    def window(self, r: int, c: int, t: int) -> dict[str, np.ndarray]:
        f, s = self.f, self.s
        T = t * f
        out = {
            "lr_up": self.lr_up[:, r * f : r * f + T, c * f : c * f + T],
            "base": self.base[:, r * f : r * f + T, c * f : c * f + T],
            "mask": self.mask_hr[None, r * f : r * f + T, c * f : c * f + T],
            "he": self.he[:, r * s : r * s + t * s, c * s : c * s + t * s],
        }
        if self.z_hr is not None:
            out["z_hr"] = self.z_hr[:, r * f : r * f + T, c * f : c * f + T]
            out["mask_truth"] = self.mask_truth[None, r * f : r * f + T, c * f : c * f + T]
        return out


def _augment(batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = {}
    for key, arr in batch.items():
        a = np.rot90(arr, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out[key] = np.ascontiguousarray(a)
    return out


def _hann(size: int) -> np.ndarray:
    w = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    return np.maximum(w, 1e-3)


class DiffST:
    """Histology-conditioned diffusion model for spatial-transcriptomics super-resolution (Diff-ST).

    Build it with :meth:`setup` from training sections (fits the normalisation, the co-expression
    graph and the residual scale), then :meth:`train`; or :meth:`load` a saved one.

    Parameters
    ----------
    genes
        Gene panel (output channels), in order.
    config
        Model configuration (:class:`~stdiff.models.DiffSTConfig`).
    factor
        Super-resolution factor (HR pixels per LR pixel, per axis).
    lr_um
        LR pixel size in µm the model was trained at.
    normalizer
        Count normalisation.
    graph
        Co-expression gene graph.
    image_channels
        Channels of the histology image (3 for H&E).
    residual_scale
        Standard deviation of the HR − bicubic residual on the training tissue.
    seed
        Seed of the initial weights.
    """

    def __init__(
        self,
        genes: Sequence[str],
        *,
        config: DiffSTConfig,
        factor: int,
        lr_um: float,
        normalizer: Normalizer,
        graph: GeneGraph,
        image_channels: int = 3,
        residual_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.genes = list(genes)
        self.config = config
        self.factor = int(factor)
        self.lr_um = float(lr_um)
        self.normalizer = normalizer
        self.graph = graph
        self.image_channels = int(image_channels)
        self.residual_scale = float(residual_scale)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # repeatable initial weights
            self.network = DiffSTUNet(config, len(self.genes), self.image_channels, graph.adjacency())
        self.ema = copy.deepcopy(self.network).requires_grad_(False)
        self.scheduler = DDPMScheduler(config.num_train_timesteps, config.beta_schedule, config.prediction_type)
        self.step = 0
        self.history: list[float] = []
        self._optimizer_state: dict | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def setup(
        cls, data: Tiles | Section | Sequence[Section], config: DiffSTConfig | str = "cpu", *, seed: int = 0
    ) -> DiffST:
        """Create an untrained model fitted to the training sections' genes, scale and co-expression."""
        sections = _as_sections(data)
        config = DiffSTConfig.preset(config) if isinstance(config, str) else config
        for s in sections:
            if s.hr is None:
                raise ValueError(
                    f"Section {s.name!r} has no HR truth; train on references with transcripts or HR bins, "
                    "or use Section.coarsen() for self-supervised training."
                )
        normalizer = data.normalizer if isinstance(data, Tiles) else fit_normalizer(sections)
        prepared = [_Prepared(s, normalizer, with_truth=True) for s in sections]
        expr = np.concatenate([p.z_hr[:, p.mask_truth > 0] for p in prepared], axis=1)
        if expr.shape[1] > 200_000:
            idx = np.random.default_rng(0).choice(expr.shape[1], 200_000, replace=False)
            expr = expr[:, idx]
        graph = coexpression_graph(expr, sections[0].genes, threshold=config.graph_threshold, top_k=config.graph_top_k)
        resid = np.concatenate([(p.z_hr - p.base)[:, p.mask_truth > 0].ravel() for p in prepared])
        residual_scale = float(max(resid.std(), 1e-3))
        model = cls(
            sections[0].genes,
            config=config,
            factor=sections[0].factor,
            lr_um=sections[0].lr_um,
            normalizer=normalizer,
            graph=graph,
            image_channels=sections[0].he.shape[0],
            residual_scale=residual_scale,
            seed=seed,
        )
        logger.info(
            "Diff-ST set up: %d genes, %d graph edges, residual scale %.3g, %d parameters.",
            len(model.genes),
            graph.edge_index.shape[1],
            residual_scale,
            model.num_parameters(),
        )
        return model

    def num_parameters(self) -> int:
        """Trainable parameters of the network."""
        return sum(p.numel() for p in self.network.parameters())

    # ------------------------------------------------------------------ training
    def _check_sections(self, sections: Sequence[Section]) -> None:
        for s in sections:
            if s.factor != self.factor:
                raise ValueError(f"Section {s.name!r} has factor={s.factor}, the model was built for {self.factor}.")
            if s.he_scale != self.config.he_scale:
                raise ValueError(
                    f"Section {s.name!r} has he_scale={s.he_scale}; the model expects {self.config.he_scale}."
                )
            if s.he.shape[0] != self.image_channels:
                raise ValueError(
                    f"Section {s.name!r} has a {s.he.shape[0]}-channel image; the model expects {self.image_channels}."
                )
            missing = [g for g in s.genes if g not in self.genes]
            if missing:
                raise KeyError(f"Genes {missing[:5]} are not in the model's panel ({len(self.genes)} genes).")

    def train(
        self,
        data: Tiles | Section | Sequence[Section],
        *,
        steps: int | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        progress: bool = True,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 500,
        resume: bool = False,
    ) -> DiffST:
        """Train on random tiles of the sections (with flips/rotations), AdamW + EMA of the weights.

        Parameters
        ----------
        data
            Training sections (with HR truth), or :class:`~stdiff.pp.Tiles` from them.
        steps
            Total optimiser steps (default ``config.steps``); with ``resume`` training continues up to it.
        device
            ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        seed
            Seed for tile sampling, noise and timesteps (CPU runs are repeatable).
        progress
            Show a tqdm progress bar.
        checkpoint
            Path written every ``checkpoint_every`` steps and at the end (atomically).
        checkpoint_every
            Steps between checkpoints.
        resume
            Continue from ``checkpoint`` when it exists (weights, EMA, optimiser state, step).

        Returns
        -------
        ``self``, trained.
        """
        sections = _as_sections(data)
        self._check_sections(sections)
        cfg = self.config
        total = int(cfg.steps if steps is None else steps)
        dev = resolve_device(device)
        if resume and checkpoint is not None and Path(checkpoint).exists():
            other = DiffST.load(checkpoint, genes=self.genes)
            self.network.load_state_dict(other.network.state_dict())
            self.ema.load_state_dict(other.ema.state_dict())
            self.step, self.history, self._optimizer_state = other.step, other.history, other._optimizer_state
            logger.info("Resumed from %s at step %d.", checkpoint, self.step)
        prepared = [_Prepared(s, self.normalizer.subset(s.genes), with_truth=True) for s in sections]
        t = cfg.tile_lr
        pools = []
        for i, p in enumerate(prepared):
            pos = tile_positions(p.section, t, 1, min_tissue=cfg.min_tissue)
            pools.extend((i, r, c) for r, c in pos)
        if not pools:
            raise ValueError(
                f"No training tile of {t}×{t} LR pixels with ≥{cfg.min_tissue:.0%} tissue; use a config with a "
                "smaller tile_lr or min_tissue, or larger sections."
            )
        pools_arr = np.asarray(pools)
        rng = np.random.default_rng([seed, self.step])
        gen = torch_generator(seed * 1_000_003 + self.step)
        net, ema = self.network.to(dev).train(), self.ema.to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        if self._optimizer_state is not None:
            opt.load_state_dict(self._optimizer_state)
        sched = self.scheduler
        bar = tqdm(total=total, initial=self.step, desc="stdiff train", disable=not progress, leave=False)
        while self.step < total:
            picks = pools_arr[rng.integers(len(pools_arr), size=cfg.batch_size)]
            items = []
            for si, r, c in picks:
                w = prepared[si].window(r, c, t)
                items.append(_augment(w, rng) if cfg.augment else w)
            batch = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
            batch = {k: v.to(dev) for k, v in batch.items()}
            x0 = (batch["z_hr"] - batch["base"]) / self.residual_scale
            mask = batch["mask"].float()
            he = batch["he"].float() / 255.0
            noise = torch.randn(x0.shape, generator=gen).to(dev)
            tt = torch.randint(0, sched.num_train_timesteps, (x0.shape[0],), generator=gen).to(dev)
            xt = sched.add_noise(x0, noise, tt)
            fraction = cfg.admitted_fraction(self.step / max(total, 1))
            out, dloss = net(xt, tt, batch["lr_up"], mask, he, fraction)
            target = sched.training_target(x0, noise, tt)
            truth = batch["mask_truth"].float()
            weight = (truth + 0.05) * sched.loss_weight(tt, cfg.min_snr_gamma).view(-1, 1, 1, 1)
            loss = (((out - target) ** 2) * weight).sum() / ((truth + 0.05).sum() * out.shape[1])
            total_loss = loss + cfg.disentangle_weight * dloss
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            decay = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for pe, pn in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(pn, 1 - decay)
                for be, bn in zip(ema.buffers(), net.buffers()):
                    be.copy_(bn)
            self.step += 1
            self.history.append(float(loss.detach()))
            bar.update(1)
            if self.step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(self.history[-20:]):.4f}")
            if checkpoint is not None and (self.step % checkpoint_every == 0 or self.step == total):
                self._optimizer_state = opt.state_dict()
                self.save(checkpoint)
        bar.close()
        self._optimizer_state = opt.state_dict()
        self.network.cpu().eval()
        self.ema.cpu().eval()
        return self

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_tiles(
        self,
        windows: list[dict[str, np.ndarray]],
        *,
        n_samples: int | None = None,
        sampler: str | None = None,
        num_inference_steps: int | None = None,
        seed: int = 0,
        device: str | torch.device = "auto",
        batch_size: int = 16,
        progress: bool = True,
        generator: torch.Generator | None = None,
        return_first: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Posterior samples of normalised HR tiles: ``(N, n_samples, G, T, T)``.

        With ``return_first`` also the network's clean-sample prediction at the first (noisiest) step
        of every trajectory, ``E[x0 | x_T, LR, H&E]``, same shape.
        """
        cfg = self.config
        n_samples = int(n_samples or cfg.n_samples)
        sampler = sampler or cfg.sampler
        steps = (
            None
            if sampler == "ddpm" and num_inference_steps is None
            else (num_inference_steps or cfg.num_inference_steps)
        )
        sched = make_scheduler(
            sampler,
            num_train_timesteps=cfg.num_train_timesteps,
            beta_schedule=cfg.beta_schedule,
            prediction_type=cfg.prediction_type,
        )
        sched.set_timesteps(steps)
        dev = resolve_device(device)
        net = self.ema.to(dev).eval()
        gen = generator if generator is not None else torch_generator(seed)
        G = len(self.genes)
        T = windows[0]["base"].shape[-1]
        out = np.zeros((len(windows), n_samples, G, T, T), dtype=np.float32)
        first = np.zeros_like(out) if return_first else None
        bar = tqdm(
            total=len(windows) * n_samples * len(sched.timesteps),
            desc="stdiff sample",
            disable=not progress,
            leave=False,
        )
        per_batch = max(1, batch_size // n_samples)
        for b0 in range(0, len(windows), per_batch):
            ws = windows[b0 : b0 + per_batch]
            lr_up = torch.from_numpy(np.stack([w["lr_up"] for w in ws])).to(dev)
            base = torch.from_numpy(np.stack([w["base"] for w in ws])).to(dev)
            mask = torch.from_numpy(np.stack([w["mask"] for w in ws])).float().to(dev)
            he = torch.from_numpy(np.stack([w["he"] for w in ws])).float().to(dev) / 255.0
            cond = net.encode(lr_up, mask, he, 1.0)
            shape = (len(ws) * n_samples, *base.shape[1:])
            x = torch.randn(shape, generator=gen).to(dev)
            base_rep = base.repeat_interleave(n_samples, dim=0)
            for k, t in enumerate(sched.timesteps.tolist()):
                tt = torch.full((x.shape[0],), t, dtype=torch.long, device=dev)
                v = net.denoise(x, tt, cond)
                step = sched.step(v, t, x, generator=gen)
                if k == 0 and first is not None:
                    z0 = (base_rep + step.pred_original_sample * self.residual_scale).clamp(min=0).cpu().numpy()
                    first[b0 : b0 + len(ws)] = z0.reshape(len(ws), n_samples, *z0.shape[1:])
                x = step.prev_sample
                bar.update(x.shape[0])
            z = (base_rep + x * self.residual_scale).clamp(min=0).cpu().numpy()
            out[b0 : b0 + len(ws)] = z.reshape(len(ws), n_samples, *z.shape[1:])
        bar.close()
        net.cpu()
        return (out, first) if return_first else out

    def predict_section(
        self,
        section: Section,
        *,
        n_samples: int | None = None,
        sampler: str | None = None,
        num_inference_steps: int | None = None,
        seed: int = 0,
        device: str | torch.device = "auto",
        batch_size: int = 16,
        progress: bool = True,
        return_samples: bool = False,
        mean_estimator: str | None = None,
    ) -> dict[str, Any]:
        """Super-resolve a whole section with overlapping tiles blended by a smooth window.

        Each tile is sampled ``n_samples`` times. The posterior mean is estimated in the normalised
        space and mapped back to counts:

        - ``"rao_blackwell"`` (default): the average over the samples of the network's clean-sample
          prediction at the first, noisiest step, ``E[x0 | x_T, LR, H&E]``. By the tower property its
          expectation over ``x_T`` is the posterior mean ``E[x0 | LR, H&E]``, with far less variance
          than averaging finished samples (which carry the sampled fine texture);
        - ``"samples"``: the average of the finished samples.

        The standard deviation is that of the finished samples (in counts).

        Returns a dict with ``mean`` and ``std`` (counts per HR pixel, ``(G, H, W)``, 0 off tissue),
        ``z_mean`` (posterior mean in the normalised space), and optionally ``samples`` (normalised).
        """
        mean_estimator = mean_estimator or self.config.mean_estimator
        if mean_estimator not in ("rao_blackwell", "samples"):
            raise ValueError(f"mean_estimator must be 'rao_blackwell' or 'samples', got {mean_estimator!r}.")
        self._check_sections([section])
        if section.genes != self.genes:
            raise ValueError(
                "The section must carry the model's whole gene panel in its order (rasterize with "
                "genes=model.genes); select genes from the result instead."
            )
        t = self.config.tile_lr
        h, w = section.shape_lr
        ph, pw = max(0, t - h), max(0, t - w)
        sec = _pad_section(section, ph, pw) if (ph or pw) else section
        full_norm = self.normalizer
        prep = _Prepared(sec, full_norm, with_truth=False)
        pos = tile_positions(sec, t, max(1, t // 2), min_tissue=0.0, cover=True)
        if len(pos) == 0:
            raise ValueError(f"Section {section.name!r} has no tissue on its LR grid (nothing to super-resolve).")
        windows = [prep.window(r, c, t) for r, c in pos]
        samples, first = self.sample_tiles(
            windows,
            n_samples=n_samples,
            sampler=sampler,
            num_inference_steps=num_inference_steps,
            seed=seed,
            device=device,
            batch_size=batch_size,
            progress=progress,
            return_first=True,
        )
        means_z = (first if mean_estimator == "rao_blackwell" else samples).mean(axis=1)
        f = self.factor
        T = t * f
        win = np.outer(_hann(T), _hann(T)).astype(np.float32)
        H, W = sec.shape_lr[0] * f, sec.shape_lr[1] * f
        G = len(self.genes)
        acc_var = np.zeros((G, H, W), np.float32)
        acc_z = np.zeros((G, H, W), np.float32)
        acc_w = np.zeros((H, W), np.float32)
        keep_samples = np.zeros((samples.shape[1], G, H, W), np.float32) if return_samples else None
        for k, (r, c) in enumerate(pos):
            counts = self.normalizer.inverse(samples[k], axis=-3)
            sl = (slice(None), slice(r * f, r * f + T), slice(c * f, c * f + T))
            acc_var[sl] += counts.var(0) * win
            acc_z[sl] += means_z[k] * win
            acc_w[sl[1:]] += win
            if keep_samples is not None:
                keep_samples[:, :, sl[1], sl[2]] += samples[k] * win
        acc_w = np.maximum(acc_w, 1e-8)
        m = sec.mask_hr.astype(np.float32)
        z_mean = (acc_z / acc_w) * m
        result = {
            "mean": self.normalizer.inverse(z_mean, axis=-3) * m,
            "std": np.sqrt(np.maximum(acc_var / acc_w, 0)) * m,
            "z_mean": z_mean,
        }
        if keep_samples is not None:
            result["samples"] = keep_samples / acc_w * m
        for key in list(result):
            result[key] = result[key][..., : h * f, : w * f]
        return result

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (tensors and plain Python only)."""
        return {
            "format": FORMAT,
            "genes": list(self.genes),
            "config": self.config.to_dict(),
            "factor": self.factor,
            "lr_um": self.lr_um,
            "normalizer": self.normalizer.to_dict(),
            "graph": self.graph.to_dict(),
            "image_channels": self.image_channels,
            "residual_scale": self.residual_scale,
            "network": self.network.state_dict(),
            "ema": self.ema.state_dict(),
            "step": self.step,
            "history": list(self.history),
            "optimizer": self._optimizer_state,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` atomically (temporary file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(self.state(), tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        logger.info("Saved Diff-ST model (step %d) to %s.", self.step, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        genes: Sequence[str] | None = None,
        config: DiffSTConfig | None = None,
    ) -> DiffST:
        """Load a model saved with :meth:`save` (``weights_only=True``).

        Parameters
        ----------
        path
            Checkpoint file.
        genes
            If given, must be contained in the model's panel (raises ``KeyError`` naming the missing ones).
        config
            If given, must equal the saved config (raises ``ValueError`` listing the differences).
        """
        from ._checkpoint import read_checkpoint

        state = read_checkpoint(path, expected_format=FORMAT)
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
        model = cls(
            state["genes"],
            config=saved_cfg,
            factor=state["factor"],
            lr_um=state["lr_um"],
            normalizer=Normalizer.from_dict(state["normalizer"]),
            graph=GeneGraph.from_dict(state["graph"]),
            image_channels=state["image_channels"],
            residual_scale=state["residual_scale"],
        )
        model.network.load_state_dict(state["network"])
        model.ema.load_state_dict(state["ema"])
        model.step = int(state["step"])
        model.history = list(state["history"])
        model._optimizer_state = state.get("optimizer")
        model.network.eval()
        model.ema.eval()
        return model

    def model_hash(self) -> str:
        """SHA-256 (first 16 hex) of the EMA weights and the model's metadata."""
        h = hashlib.sha256()
        for k, v in sorted(self.ema.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr((self.genes, self.factor, self.lr_um, self.config.to_dict())).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"DiffST(genes={len(self.genes)}, factor={self.factor}, lr_um={self.lr_um:g}, step={self.step}, "
            f"modulation={self.config.use_modulation}, cross_attention={self.config.use_cross_attention}, "
            f"gene_graph={self.config.use_gene_graph})"
        )


def _as_sections(data: Tiles | Section | Sequence[Section]) -> list[Section]:
    if isinstance(data, Tiles):
        return list(data.sections)
    if isinstance(data, Section):
        return [data]
    sections = list(data)
    if not sections or not all(isinstance(s, Section) for s in sections):
        raise TypeError("data must be Tiles, a Section or a list of Sections (see stdiff.pp.rasterize).")
    return sections


def _pad_section(section: Section, ph: int, pw: int) -> Section:
    from dataclasses import replace

    f, s = section.factor, section.factor * section.he_scale
    fill = 255 if section.he.dtype == np.uint8 else 0
    return replace(
        section,
        lr=np.pad(section.lr, ((0, 0), (0, ph), (0, pw))),
        hr=None if section.hr is None else np.pad(section.hr, ((0, 0), (0, ph * f), (0, pw * f))),
        he=np.pad(section.he, ((0, 0), (0, ph * s), (0, pw * s)), constant_values=fill),
        mask_lr=np.pad(section.mask_lr, ((0, ph), (0, pw))),
        mask_hr=np.pad(section.mask_hr, ((0, ph * f), (0, pw * f))),
        mask_truth=None if section.mask_truth is None else np.pad(section.mask_truth, ((0, ph * f), (0, pw * f))),
    )
