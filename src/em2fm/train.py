"""Train: fit the asymmetric U-Net on the tiles of the training sections.

Each step draws a batch of random windows (``tile_size`` target px, fully
inside the FM/EM overlap) from the training sections, with ``margin`` target
px of EM context around each, and a random flip/rotation. The loss is the mean
squared error on FM normalised per channel with the training statistics
(saved with the weights, so predictions come back in camera units). Every
``val_every`` steps the validation sections are predicted whole and their PCC
logged; the checkpoint with the best mean validation PCC is kept.

Outputs: ``model.pt`` (best), ``last.pt`` (final step), both loadable with
``torch.load(..., weights_only=True)``, and a TSV with one row per step.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import io
from .evaluate import pcc
from .inference import InferenceSettings, choose_device, predict_array, set_threads
from .receptive import resolve_margin
from .tiles import window_origins
from .unet import UNetConfig, build

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    """Training settings (config ``train``)."""

    steps: int = 1200
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    val_every: int = 100
    device: str = "auto"
    seed: int = 42


@dataclass
class SectionData:
    """One section's tiles in memory."""

    name: str
    split: str
    em: np.ndarray  # (H·s, W·s) z-scored
    fm: np.ndarray  # (C, H, W) raw ADU
    mask: np.ndarray  # (H, W)
    starts: np.ndarray  # (N, 2) window origins fully inside the mask
    pixel_size_m: float
    channels: list[str]
    registration_status: str = "ok"
    use_for_training: bool = True


def load_sections(tiles_npz: list[str | Path], tile_size: int) -> list[SectionData]:
    """Load tiles (npz + json beside it) and list the valid window origins."""
    out = []
    for path in tiles_npz:
        path = Path(path)
        arrays = io.load_npz(path)
        meta = io.read_json(path.with_suffix(".json"))
        mask = arrays["mask"].astype(bool)
        starts = window_origins(mask, tile_size)
        out.append(SectionData(meta["section"], meta["split"], arrays["em"], arrays["fm"],
                               mask, starts, float(meta["target_pixel_size_m"]),
                               meta["channels"], meta.get("registration_status", "ok"),
                               bool(meta.get("use_for_training", True))))
    return out


def target_statistics(sections: list[SectionData]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (ADU) of FM inside the mask of the training sections."""
    vals = [s.fm[:, s.mask] for s in sections if s.split == "train"]
    if not vals or sum(v.shape[1] for v in vals) == 0:
        raise ValueError("no training section has FM/EM overlap; check registration and split")
    allv = np.concatenate(vals, axis=1).astype(np.float64)
    return allv.mean(axis=1), np.maximum(allv.std(axis=1), 1e-6)


class WindowSampler:
    """Random training windows with EM context and dihedral augmentation."""

    def __init__(self, sections: list[SectionData], tile_size: int, margin: int,
                 em_scale: int, mean: np.ndarray, std: np.ndarray, seed: int) -> None:
        self.sections = [s for s in sections if len(s.starts)]
        if not self.sections:
            raise ValueError(f"no training window of {tile_size} target px fits inside the "
                             "FM/EM overlap of any training section; lower tiles.tile_size")
        self.t, self.m, self.s = tile_size, margin, em_scale
        pad = margin * em_scale
        self.em = [np.pad(s.em, pad, mode="reflect") for s in self.sections]
        self.fm = [((s.fm - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
                   for s in self.sections]
        weights = np.array([len(s.starts) for s in self.sections], float)
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(EM (n, 1, (T+2m)·s, …), FM (n, C, T, T)) as float32 tensors."""
        t, m, s = self.t, self.m, self.s
        xs, ys = [], []
        for _ in range(n):
            k = self.rng.choice(len(self.sections), p=self.p)
            r, c = self.sections[k].starts[self.rng.integers(len(self.sections[k].starts))]
            x = self.em[k][r * s: (r + t + 2 * m) * s, c * s: (c + t + 2 * m) * s]
            y = self.fm[k][:, r: r + t, c: c + t]
            rot, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
            if flip:
                x, y = x[:, ::-1], y[:, :, ::-1]
            x, y = np.rot90(x, rot), np.rot90(y, rot, axes=(1, 2))
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))


def trustworthy(sections: list[SectionData]) -> list[SectionData]:
    """The sections whose registration may train and validate the network.

    A section whose registration is not trustworthy (``use_for_training`` false in its
    tiles: a failed or low-confidence registration) would teach the network blur or a
    wrong placement, and would choose the checkpoint on a wrong target.

    Raises:
        ValueError: no training section is left.
    """
    for s in sections:
        if not s.use_for_training:
            log.warning("%s (%s) left out of training and validation: its registration is "
                        "%s (see results/registration/%s.json)", s.name, s.split,
                        s.registration_status, s.name)
    kept = [s for s in sections if s.use_for_training]
    if not any(s.split == "train" for s in kept):
        raise ValueError(
            "no training section has a trustworthy registration ("
            + ", ".join(f"{s.name}: {s.registration_status}" for s in sections if
                        s.split == "train") + "). Fix: read the reasons in the registration "
            "JSONs (results/registration/round*/<section>.json), widen the capture range "
            "(register.max_shift_um, max_rotation_deg, max_scale) if the stage metadata can "
            "be that far off, or set register.on_failure: metadata to trust the metadata")
    return kept


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _validate(model, sections: list[SectionData], margin: int, mean: np.ndarray,
              std: np.ndarray, device: torch.device) -> tuple[float, list[float]]:
    """Mean squared error (normalised) and PCC per channel over the validation masks."""
    preds, truths = [], []
    for s in sections:  # the windowed inference of prediction, with the same context
        pred, _ = predict_array(model, s.em, margin, InferenceSettings(window=96), device)
        preds.append(pred[:, s.mask])
        truths.append(((s.fm - mean[:, None, None]) / std[:, None, None])[:, s.mask])
    p, t = np.concatenate(preds, axis=1), np.concatenate(truths, axis=1)
    return float(np.mean((p - t) ** 2)), [pcc(p[c], t[c]) for c in range(p.shape[0])]


def train(
    tiles_npz: list[str | Path],
    unet: dict,
    params: TrainParams,
    tile_size: int,
    margin: int,
    channels: list[dict],
    model_path: str | Path,
    last_path: str | Path,
    log_path: str | Path,
    threads: int = 1,
) -> dict:
    """Train the network and write the checkpoints and the per-step TSV.

    Args:
        tiles_npz: tiles of the training and validation sections (JSON beside each).
        unet: ``model`` config (base_channels, max_channels, depth).
        params: training settings.
        tile_size: training window edge in target px.
        margin: EM context in target px.
        channels: FM channels (name, excitation_nm, emission_nm), in output order.
        model_path: best checkpoint (by mean validation PCC).
        last_path: checkpoint after the last step.
        log_path: TSV, one row per step.
        threads: CPU threads granted.

    Returns:
        Summary (best step and validation PCC).
    """
    n_threads = set_threads(threads)
    _seed_everything(params.seed)
    device = choose_device(params.device)
    sections = trustworthy(load_sections(tiles_npz, tile_size))
    train_s = [s for s in sections if s.split == "train"]
    val_s = [s for s in sections if s.split == "val" and s.mask.any()]
    if not val_s:
        log.warning("no validation section (with a trustworthy registration): the best "
                    "checkpoint is chosen on the TRAINING sections, so its validation PCC is "
                    "optimistic. Fix: give the split a validation section whose registration "
                    "is ok")
        val_s = train_s
    em_scale = round(sections[0].em.shape[0] / sections[0].mask.shape[0])
    mean, std = target_statistics(sections)
    cfg = UNetConfig(out_channels=len(channels), em_scale=em_scale, **unet)
    if ((tile_size + 2 * margin) * em_scale) % cfg.multiple:
        raise ValueError(f"(tiles.tile_size + 2·tiles.margin)·em_scale = "
                         f"{(tile_size + 2 * margin) * em_scale} must be a multiple of "
                         f"2**model.depth = {cfg.multiple}")
    model = build(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=params.learning_rate,
                            weight_decay=params.weight_decay)
    warmup = max(1, params.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup)
        * 0.5 * (1 + math.cos(math.pi * min(i, params.steps) / params.steps)))
    sampler = WindowSampler(train_s, tile_size, margin, em_scale, mean, std, params.seed)
    names = [c["name"] for c in channels]
    header = ["step", "elapsed_s", "lr", "train_loss", "val_loss",
              *[f"val_pcc_{n}" for n in names], "val_pcc_mean"]
    rows = ["\t".join(header)]
    use_amp = device.type == "cuda"
    best: dict = {"step": 0, "val_pcc_mean": -math.inf}
    base = {
        "model": cfg.as_dict(), "channels": channels,
        "target_mean": [float(v) for v in mean], "target_std": [float(v) for v in std],
        "target_pixel_size_m": float(np.mean([s.pixel_size_m for s in train_s])),
        "margin": margin, "tile_size": tile_size,
        "train_sections": [s.name for s in train_s], "val_sections": [s.name for s in val_s],
        "excluded_sections": sorted(set(_names(tiles_npz)) - {s.name for s in sections}),
        "params": asdict(params),
    }
    t0 = time.perf_counter()
    model.train()
    log.info("training %d steps on %s (%d threads): %d train / %d val sections, %d params",
             params.steps, device, n_threads, len(train_s), len(val_s),
             sum(p.numel() for p in model.parameters()))
    for step in range(1, params.steps + 1):
        x, y = sampler.batch(params.batch_size)
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(x)[:, :, margin: margin + tile_size, margin: margin + tile_size]
        loss = torch.mean((out.float() - y) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        row: dict[str, object] = {"step": step, "elapsed_s": f"{time.perf_counter() - t0:.2f}",
                                  "lr": f"{sched.get_last_lr()[0]:.6g}",
                                  "train_loss": f"{loss.item():.6g}"}
        if step % params.val_every == 0 or step == params.steps:
            val_loss, val_pcc = _validate(model, val_s, margin, mean, std, device)
            row["val_loss"] = f"{val_loss:.6g}"
            for n, v in zip(names, val_pcc, strict=True):
                row[f"val_pcc_{n}"] = f"{v:.4f}"
            row["val_pcc_mean"] = f"{float(np.mean(val_pcc)):.4f}"
            log.info("step %d: train loss %.4f, val loss %.4f, val PCC %s", step, loss.item(),
                     val_loss, ", ".join(f"{n} {v:.3f}" for n, v in zip(names, val_pcc,
                                                                        strict=True)))
            score = float(np.nan_to_num(np.mean(val_pcc), nan=-1.0))
            if score > best["val_pcc_mean"]:
                best = {"step": step, "val_pcc_mean": score,
                        "val_pcc": dict(zip(names, val_pcc, strict=True))}
                _save(model, {**base, **best}, model_path)
        rows.append("\t".join(str(row.get(h, "")) for h in header))
    _save(model, {**base, "step": params.steps}, last_path)
    io.write_text(log_path, "\n".join(rows) + "\n")
    log.info("best step %d, mean validation PCC %.4f, %.0f s", best["step"],
             best["val_pcc_mean"], time.perf_counter() - t0)
    return best


def _names(tiles_npz: list[str | Path]) -> list[str]:
    return [Path(p).stem for p in tiles_npz]


def _save(model: torch.nn.Module, meta: dict, path: str | Path) -> None:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with io.atomic_path(path) as tmp:
        torch.save({**meta, "state_dict": state}, tmp)


def run(tiles_npz: list[str], ingest_json: str, unet: dict, settings: dict, tiles: dict,
        seed: int, threads: int, model_path: str, last_path: str, log_path: str) -> dict:
    """Train from the rule's inputs (channels read from one ingest JSON)."""
    params = TrainParams(**settings, seed=seed)
    tile_size = int(tiles["tile_size"])
    margin = resolve_margin(tiles.get("margin"), int(unet["depth"]), int(tiles["em_scale"]))
    channels = [{k: c[k] for k in ("name", "excitation_nm", "emission_nm")}
                for c in io.read_json(ingest_json)["fm"]["channels"]]
    return train(tiles_npz, unet, params, tile_size, margin, channels, model_path,
                 last_path, log_path, threads)
