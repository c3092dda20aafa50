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

import hashlib
import json
import logging
import math
import platform
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import io
from .evaluate import pcc
from .predict import choose_device, predict_work, set_threads
from .tiles import normalise_em, window_origins
from .unet import UNetConfig, build, n_parameters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    """Training settings (config ``train``; see schemas/config.schema.yaml)."""

    steps: int = 1200
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    val_every: int = 100
    device: str = "auto"
    seed: int = 42
    checkpoint_every: int = 100  # steps between resume checkpoints (also on SIGTERM)
    missing_validation: str = "warn"  # warn | error, when no validation section is usable
    fm_normalisation: str = "global"  # global | section (background + percentile per section)
    em_normalisation: str = "zscore"  # zscore | percentile (per section)
    window_sampling: str = "uniform"  # uniform | signal (half the windows where signal is)
    loss: str = "mse"  # mse | shift_mse (best of the shifts within loss_max_shift_px)
    loss_max_shift_px: int = 1  # target px, shift_mse only

    def __post_init__(self) -> None:
        choices = {"missing_validation": ("warn", "error"),
                   "fm_normalisation": ("global", "section"),
                   "em_normalisation": ("zscore", "percentile"),
                   "window_sampling": ("uniform", "signal"), "loss": ("mse", "shift_mse")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"train.{key} is {getattr(self, key)!r}; use one of {allowed}")


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


FM_PERCENTILES = (1.0, 99.5)  # per-section FM background and scale (fm_normalisation section)


def section_scaling(fm: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel background and range (ADU) of one section's FM inside its mask.

    Background: the :data:`FM_PERCENTILES` low percentile; range: high minus low percentile.
    """
    if not mask.any():
        return np.zeros(fm.shape[0]), np.ones(fm.shape[0])
    lo, hi = np.percentile(fm[:, mask].astype(np.float64), FM_PERCENTILES, axis=1)
    return lo, np.maximum(hi - lo, 1e-6)


@dataclass
class Normalisation:
    """How FM targets and EM inputs are normalised (stored in the checkpoint).

    ``global``: FM z-scored per channel with the mean and std of all training pixels.
    ``section``: each section's FM first mapped to reference units,
    ``(fm - background_s) / range_s · range_ref + background_ref`` (reference: the mean
    over training sections), then z-scored like ``global``; so predictions, denormalised
    with ``target_mean``/``target_std``, come back in FM units of a typical training
    section (ADU).
    """

    fm: str
    em: str
    mean: np.ndarray  # (C,) ADU, reference units
    std: np.ndarray  # (C,) ADU
    scaling: dict[str, tuple[np.ndarray, np.ndarray]]  # section → (background, range)
    reference: tuple[np.ndarray, np.ndarray] | None

    def target(self, s: SectionData) -> np.ndarray:
        """Normalised FM (C, H, W) float32 of a section."""
        fm = s.fm.astype(np.float64)
        if self.fm == "section":
            bg, rg = self.scaling[s.name]
            fm = ((fm - bg[:, None, None]) / rg[:, None, None] * self.reference[1][:, None, None]
                  + self.reference[0][:, None, None])
        return ((fm - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32)

    def as_meta(self) -> dict:
        """Checkpoint and model-card fields (plain types)."""
        out: dict = {"fm_normalisation": self.fm, "em_normalisation": self.em}
        if self.fm == "section":
            assert self.reference is not None
            out["fm_percentiles"] = list(FM_PERCENTILES)
            out["fm_reference_background"] = [float(v) for v in self.reference[0]]
            out["fm_reference_range"] = [float(v) for v in self.reference[1]]
            out["fm_section_background"] = {k: [float(v) for v in b]
                                            for k, (b, _) in self.scaling.items()}
            out["fm_section_range"] = {k: [float(v) for v in r]
                                       for k, (_, r) in self.scaling.items()}
        if self.em == "percentile":
            from .tiles import EM_PERCENTILES
            out["em_percentiles"] = list(EM_PERCENTILES)
        return out


def normalisation(sections: list[SectionData], fm_mode: str = "global",
                  em_mode: str = "zscore") -> Normalisation:
    """Normalisation statistics from the training sections (see :class:`Normalisation`)."""
    scaling = {s.name: section_scaling(s.fm, s.mask) for s in sections}
    train_s = [s for s in sections if s.split == "train" and s.mask.any()]
    reference = None
    if fm_mode == "section" and train_s:
        reference = (np.mean([scaling[s.name][0] for s in train_s], axis=0),
                     np.mean([scaling[s.name][1] for s in train_s], axis=0))
    norm = Normalisation(fm_mode, em_mode, np.zeros(1), np.ones(1), scaling, reference)
    if not train_s:
        raise ValueError("no training section has FM/EM overlap; check registration and split")
    if fm_mode == "global":
        vals = [s.fm[:, s.mask] for s in train_s]
    else:
        n = train_s[0].fm.shape[0]
        norm.mean, norm.std = np.zeros(n), np.ones(n)  # identity: reference units
        vals = [norm.target(s)[:, s.mask] for s in train_s]
    allv = np.concatenate(vals, axis=1).astype(np.float64)
    norm.mean, norm.std = allv.mean(axis=1), np.maximum(allv.std(axis=1), 1e-6)
    return norm


def target_statistics(sections: list[SectionData]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (ADU) of FM inside the mask of the training sections."""
    norm = normalisation(sections, "global")
    return norm.mean, norm.std


def _window_sums(mask_or_map: np.ndarray, starts: np.ndarray, size: int) -> np.ndarray:
    """Sum of a map over the ``size``² windows at ``starts`` (summed-area table)."""
    sat = np.pad(mask_or_map.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    r, c = starts[:, 0], starts[:, 1]
    return sat[r + size, c + size] - sat[r, c + size] - sat[r + size, c] + sat[r, c]


SIGNAL_PERCENTILE = 99.0  # window_sampling signal: pixels above it count as rare signal


class WindowSampler:
    """Random training windows with EM context and dihedral augmentation.

    ``sampling="uniform"``: a section with probability ∝ its number of windows, then a
    window uniformly. ``"signal"``: half the windows drawn that way, the other half, for
    each channel in turn, ∝ the number of that channel's brightest pixels (above its
    :data:`SIGNAL_PERCENTILE` over the training pixels) in the window, so that rare signal
    (an islet, nuclei) is seen.
    """

    def __init__(self, sections: list[SectionData], tile_size: int, margin: int,
                 em_scale: int, mean: np.ndarray, std: np.ndarray, seed: int,
                 targets: list[np.ndarray] | None = None, sampling: str = "uniform") -> None:
        keep = [i for i, s in enumerate(sections) if len(s.starts)]
        self.sections = [sections[i] for i in keep]
        if not self.sections:
            raise ValueError(f"no training window of {tile_size} target px fits inside the "
                             "FM/EM overlap of any training section; lower tiles.tile_size")
        self.t, self.m, self.s = tile_size, margin, em_scale
        pad = margin * em_scale
        self.em = [np.pad(s.em, pad, mode="reflect") for s in self.sections]
        if targets is None:
            self.fm = [((s.fm - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
                       for s in self.sections]
        else:
            self.fm = [targets[i] for i in keep]
        weights = np.array([len(s.starts) for s in self.sections], float)
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)
        self.sampling = sampling
        self.cdf: list[np.ndarray] = []
        self.flat = np.concatenate([np.column_stack([np.full(len(s.starts), k), s.starts])
                                    for k, s in enumerate(self.sections)])
        if sampling == "signal":
            n_ch = self.fm[0].shape[0]
            for c in range(n_ch):
                vals = np.concatenate([f[c][s.mask] for f, s in zip(self.fm, self.sections,
                                                                    strict=True)])
                thr = np.percentile(vals, SIGNAL_PERCENTILE)
                w = np.concatenate([_window_sums((f[c] > thr) & s.mask, s.starts, tile_size)
                                    for f, s in zip(self.fm, self.sections, strict=True)])
                if w.sum() > 0:
                    self.cdf.append(np.cumsum(w) / w.sum())

    def _origin(self, i: int) -> tuple[int, int, int]:
        if self.sampling == "signal" and self.cdf and i % 2:
            cdf = self.cdf[(i // 2) % len(self.cdf)]
            j = min(int(np.searchsorted(cdf, self.rng.random(), side="right")),
                    len(cdf) - 1)
            k, r, c = self.flat[j]
            return int(k), int(r), int(c)
        k = self.rng.choice(len(self.sections), p=self.p)
        r, c = self.sections[k].starts[self.rng.integers(len(self.sections[k].starts))]
        return int(k), int(r), int(c)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(EM (n, 1, (T+2m)·s, …), FM (n, C, T, T)) as float32 tensors."""
        t, m, s = self.t, self.m, self.s
        xs, ys = [], []
        for i in range(n):
            k, r, c = self._origin(i)
            x = self.em[k][r * s: (r + t + 2 * m) * s, c * s: (c + t + 2 * m) * s]
            y = self.fm[k][:, r: r + t, c: c + t]
            rot, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
            if flip:
                x, y = x[:, ::-1], y[:, :, ::-1]
            x, y = np.rot90(x, rot), np.rot90(y, rot, axes=(1, 2))
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))

    def get_state(self) -> str:
        """The random state (JSON text: loads with ``weights_only=True``)."""
        return json.dumps(self.rng.bit_generator.state)

    def set_state(self, state: str) -> None:
        """Restore :meth:`get_state`."""
        self.rng.bit_generator.state = json.loads(state)


def window_loss(out: torch.Tensor, y: torch.Tensor, margin: int, loss: str = "mse",
                max_shift: int = 1) -> torch.Tensor:
    """Loss of a batch of windows.

    Args:
        out: network output over the whole input window, (N, C, T + 2·margin, …).
        y: target, (N, C, T, T), normalised.
        margin: context in target px (the output's centre is compared).
        loss: ``mse``, or ``shift_mse``: per window the smallest MSE over integer shifts of
            the prediction within ±``max_shift`` target px (tolerates a small residual
            misregistration of that window's FM).
        max_shift: target px, at most ``margin``.
    """
    t = y.shape[-1]
    if loss == "mse" or max_shift == 0:
        return torch.mean((out[:, :, margin: margin + t, margin: margin + t].float() - y) ** 2)
    k = min(max_shift, margin)
    errs = [torch.mean((out[:, :, margin + dy: margin + dy + t,
                            margin + dx: margin + dx + t].float() - y) ** 2, dim=(1, 2, 3))
            for dy in range(-k, k + 1) for dx in range(-k, k + 1)]
    return torch.stack(errs).min(dim=0).values.mean()


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


NO_VALIDATION = ("no validation section (with a trustworthy registration): the best "
                 "checkpoint is chosen on the TRAINING sections, so its validation PCC is "
                 "optimistic. Fix: give the split a validation section whose registration is "
                 "ok (split.val or split.val_fraction)")


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _validate(model, sections: list[SectionData], margin: int, norm: Normalisation,
              device: torch.device) -> tuple[float, list[float]]:
    """Mean squared error (normalised) and PCC per channel over the validation masks."""
    model.eval()
    preds, truths = [], []
    for s in sections:
        pred, _ = predict_work(model, s.em, margin, window=96, device=device)
        preds.append(pred[:, s.mask])
        truths.append(norm.target(s)[:, s.mask])
    model.train()
    p, t = np.concatenate(preds, axis=1), np.concatenate(truths, axis=1)
    return float(np.mean((p - t) ** 2)), [pcc(p[c], t[c]) for c in range(p.shape[0])]


def checkpoint_dir_for(model_path: str | Path) -> Path:
    """Where the resume state of a training run lives: ``checkpoint/`` beside model.pt.

    Not a declared output of the rule (Snakemake deletes those before a rerun), and keyed
    off the output path, so a registration round's model resumes from its own folder.
    """
    return Path(model_path).parent / "checkpoint"


def _file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_fingerprint(tiles_npz: list[str | Path], unet: dict, params: TrainParams,
                    tile_size: int, margin: int, channels: list[dict]) -> str:
    """Hash of everything that determines the training (inputs' content included).

    A resume state with another fingerprint is stale and ignored. ``checkpoint_every``
    and ``device`` do not enter it (a job may resume on another node).
    """
    settings = {k: v for k, v in asdict(params).items()
                if k not in ("checkpoint_every", "device")}
    doc = {"settings": settings, "unet": unet, "tile_size": tile_size, "margin": margin,
           "channels": channels,
           "inputs": [[Path(p).name, _file_digest(p),
                       _file_digest(Path(p).with_suffix(".json"))] for p in tiles_npz]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class _Run:
    """Mutable state of one training run (what a resume checkpoint holds)."""

    step: int = 0
    elapsed_s: float = 0.0
    rows: list[str] | None = None
    best: dict | None = None
    best_state: dict | None = None
    resumes: int = 0
    resumed_from: list[int] | None = None


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _save_state(path: Path, fingerprint: str, run: _Run, model, opt, sched,
                sampler: WindowSampler, threads: int) -> None:
    state = {
        "fingerprint": fingerprint, "step": run.step, "elapsed_s": run.elapsed_s,
        "rows": list(run.rows or []), "best": run.best, "best_state_dict": run.best_state,
        "resumes": run.resumes, "resumed_from": list(run.resumed_from or []),
        "threads": threads, "model": _cpu_state(model), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "sampler_rng": sampler.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, fingerprint: str) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file: start again rather than fail
        log.warning("resume state %s unreadable (%s): training starts from step 0", path, err)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("resume state %s belongs to other inputs or settings: ignored, training "
                    "starts from step 0", path)
        return None
    return state


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def software_versions() -> dict:
    """Versions of the software that shaped the weights."""
    import sys

    from . import __version__
    return {"em2fm": __version__, "python": sys.version.split()[0],
            "torch": torch.__version__, "numpy": np.__version__,
            "cuda": torch.version.cuda, "platform": platform.platform()}


def model_card(meta: dict, model: torch.nn.Module, norm: Normalisation, summary: dict) -> dict:
    """The model card (results/model/model.json): what the network is and what it saw."""
    cfg = meta["model"]
    target_px = float(meta["target_pixel_size_m"])
    return {
        "architecture": {
            "name": type(model).__name__,
            "description": (f"U-Net with {cfg['depth']} contractions at EM resolution and "
                            f"{cfg['depth'] - round(math.log2(cfg['em_scale']))} expansions "
                            "to FM resolution (2 conv3x3+BN+ReLU per level, max-pool, "
                            "bilinear upsampling, skip connections)"),
            **cfg,
        },
        "n_parameters": n_parameters(model),
        "input": {"channels": ["EM (backscattered electrons)"],
                  "pixel_size_nm": target_px / cfg["em_scale"] * 1e9,
                  "context_margin_target_px": meta["margin"],
                  "normalisation": meta["em_normalisation"]},
        "output": {"channels": meta["channels"], "pixel_size_nm": target_px * 1e9,
                   "units": "FM camera counts (ADU) of the training data"
                   + (", a typical training section's brightness"
                      if meta["fm_normalisation"] == "section" else "")},
        "normalisation": {k: meta[k] for k in meta if k.startswith(("fm_", "em_"))
                          or k in ("target_mean", "target_std")},
        "data": {"train_sections": meta["train_sections"],
                 "val_sections": meta["val_sections"],
                 "excluded_sections": meta["excluded_sections"],
                 "tile_size_target_px": meta["tile_size"],
                 "windows_seen": summary["steps"] * meta["params"]["batch_size"]},
        "training": {"settings": meta["params"], "steps": summary["steps"],
                     "best_step": summary["best"]["step"],
                     "time_s": round(summary["elapsed_s"], 1),
                     "device": summary["device"], "threads": summary["threads"],
                     "cpu": _cpu_name(), "resumes": summary["resumes"],
                     "resumed_from_steps": summary["resumed_from"]},
        "validation": {"pcc": summary["best"].get("val_pcc", {}),
                       "pcc_mean": summary["best"]["val_pcc_mean"],
                       "sections": meta["val_sections"],
                       "on_training_data": meta["validation_on_training_data"]},
        "warnings": meta["warnings"],
        "reproducibility": ("bitwise identical for the same inputs, config, seed, software "
                            "versions, device and thread count; other thread counts or CPU "
                            "types change the weights at the float rounding level (README)"),
        "software": software_versions(),
    }


def _progress(step: int, steps: int, losses: list[float], elapsed: float, since: int) -> None:
    rate = elapsed / max(since, 1)
    left = rate * (steps - step)
    log.info("step %d/%d (%.0f%%): train loss %.4f (mean of the last %d), %.2f s/step, "
             "%s left", step, steps, 100 * step / steps, float(np.mean(losses)), len(losses),
             rate, _duration(left))


def _duration(s: float) -> str:
    s = round(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


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
    card_path: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    step_hook: Callable[[int], None] | None = None,
) -> dict:
    """Train the network and write the checkpoints, the per-step TSV and the model card.

    Resumable: every ``checkpoint_every`` steps and on SIGTERM the model, optimiser,
    scheduler, sampler and torch random states, step, TSV rows and best checkpoint are saved
    to ``checkpoint_dir/state.pt`` (default: ``checkpoint/`` beside ``model_path``); a call
    with the same inputs and settings continues from there (bitwise identical to an
    uninterrupted run on the same device and thread count) and removes it when done.

    Args:
        tiles_npz: tiles of the training and validation sections (JSON beside each).
        unet: ``model`` config (base_channels, max_channels, depth).
        params: training settings.
        tile_size: training window edge in target px.
        margin: EM context in target px.
        channels: FM channels (name, excitation_nm, emission_nm), in output order.
        model_path: best checkpoint (by mean validation PCC).
        last_path: checkpoint after the last step.
        log_path: TSV, one row per step, written as training goes.
        threads: CPU threads granted.
        card_path: model card JSON (None: not written).
        checkpoint_dir: resume state folder (None: ``checkpoint/`` beside ``model_path``).
        step_hook: called after each step with the step number (tests, benchmarks).

    Returns:
        Summary (best step and validation PCC).
    """
    n_threads = set_threads(threads)
    _seed_everything(params.seed)
    device = choose_device(params.device)
    sections = trustworthy(load_sections(tiles_npz, tile_size))
    if params.em_normalisation != "zscore":
        for s in sections:
            s.em = normalise_em(s.em, params.em_normalisation)
    train_s = [s for s in sections if s.split == "train"]
    val_s = [s for s in sections if s.split == "val" and s.mask.any()]
    warnings: list[str] = []
    if not val_s:
        if params.missing_validation == "error":
            raise ValueError(NO_VALIDATION.replace("optimistic.", "optimistic; "
                             "train.missing_validation is error.", 1))
        log.warning(NO_VALIDATION)
        warnings.append(NO_VALIDATION)
        val_s = train_s
    em_scale = round(sections[0].em.shape[0] / sections[0].mask.shape[0])
    norm = normalisation(sections, params.fm_normalisation, params.em_normalisation)
    cfg = UNetConfig(out_channels=len(channels), em_scale=em_scale, **unet)
    if ((tile_size + 2 * margin) * em_scale) % cfg.multiple:
        raise ValueError(f"(tiles.tile_size + 2·tiles.margin)·em_scale = "
                         f"{(tile_size + 2 * margin) * em_scale} must be a multiple of "
                         f"2**model.depth = {cfg.multiple}")
    if params.loss == "shift_mse" and params.loss_max_shift_px > margin:
        raise ValueError(f"train.loss_max_shift_px ({params.loss_max_shift_px}) must not "
                         f"exceed tiles.margin ({margin})")
    model = build(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=params.learning_rate,
                            weight_decay=params.weight_decay)
    warmup = max(1, params.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup)
        * 0.5 * (1 + math.cos(math.pi * min(i, params.steps) / params.steps)))
    targets = [norm.target(s) for s in train_s]
    sampler = WindowSampler(train_s, tile_size, margin, em_scale, norm.mean, norm.std,
                            params.seed, targets=targets, sampling=params.window_sampling)
    names = [c["name"] for c in channels]
    header = ["step", "elapsed_s", "lr", "train_loss", "val_loss",
              *[f"val_pcc_{n}" for n in names], "val_pcc_mean"]
    use_amp = device.type == "cuda"
    base = {
        "model": cfg.as_dict(), "channels": channels,
        "target_mean": [float(v) for v in norm.mean], "target_std": [float(v) for v in norm.std],
        **norm.as_meta(),
        "target_pixel_size_m": float(np.mean([s.pixel_size_m for s in train_s])),
        "margin": margin, "tile_size": tile_size,
        "train_sections": [s.name for s in train_s], "val_sections": [s.name for s in val_s],
        "excluded_sections": sorted(set(_names(tiles_npz)) - {s.name for s in sections}),
        "validation_on_training_data": val_s is train_s,
        "warnings": warnings,
        "params": asdict(params),
    }

    ckdir = Path(checkpoint_dir) if checkpoint_dir else checkpoint_dir_for(model_path)
    state_path = ckdir / "state.pt"
    fingerprint = run_fingerprint(tiles_npz, unet, params, tile_size, margin, channels)
    run = _Run(rows=[], best={"step": 0, "val_pcc_mean": -math.inf}, resumed_from=[])
    state = _load_state(state_path, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sampler.set_state(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        run = _Run(step=int(state["step"]), elapsed_s=float(state["elapsed_s"]),
                   rows=list(state["rows"]), best=dict(state["best"]),
                   best_state=state["best_state_dict"], resumes=int(state["resumes"]) + 1,
                   resumed_from=[*state["resumed_from"], int(state["step"])])
        if run.best_state is not None:
            _save_state_dict(run.best_state, {**base, **run.best}, model_path)
        log.info("resuming from step %d of %d (%s; saved with %d threads, now %d)",
                 run.step, params.steps, state_path, state["threads"], n_threads)
    _write_rows(log_path, header, run.rows or [])

    stop: dict[str, int] = {}
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGTERM, lambda signum, _f: stop.update(sig=signum))
    t0 = time.perf_counter() - run.elapsed_s
    start_step, recent = run.step, []
    progress_every = max(1, params.steps // 20)
    model.train()
    log.info("training %d steps on %s (%d threads): %d train / %d val sections, %d params, "
             "FM normalisation %s, EM %s, sampling %s, loss %s", params.steps, device,
             n_threads, len(train_s), len(val_s), n_parameters(model), params.fm_normalisation,
             params.em_normalisation, params.window_sampling, params.loss)
    try:
        with open(log_path, "a") as tsv:
            for step in range(run.step + 1, params.steps + 1):
                x, y = sampler.batch(params.batch_size)
                x, y = x.to(device), y.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    out = model(x)
                loss = window_loss(out, y, margin, params.loss, params.loss_max_shift_px)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_v = loss.item()
                recent.append(loss_v)
                row: dict[str, object] = {
                    "step": step, "elapsed_s": f"{time.perf_counter() - t0:.2f}",
                    "lr": f"{sched.get_last_lr()[0]:.6g}", "train_loss": f"{loss_v:.6g}"}
                if step % params.val_every == 0 or step == params.steps:
                    val_loss, val_pcc = _validate(model, val_s, margin, norm, device)
                    row["val_loss"] = f"{val_loss:.6g}"
                    for n, v in zip(names, val_pcc, strict=True):
                        row[f"val_pcc_{n}"] = f"{v:.4f}"
                    row["val_pcc_mean"] = f"{float(np.mean(val_pcc)):.4f}"
                    log.info("step %d: val loss %.4f, val PCC %s", step, val_loss,
                             ", ".join(f"{n} {v:.3f}" for n, v in zip(names, val_pcc,
                                                                      strict=True)))
                    score = float(np.nan_to_num(np.mean(val_pcc), nan=-1.0))
                    if score > run.best["val_pcc_mean"]:
                        run.best = {"step": step, "val_pcc_mean": score,
                                    "val_pcc": dict(zip(names, val_pcc, strict=True))}
                        run.best_state = _cpu_state(model)
                        _save_state_dict(run.best_state, {**base, **run.best}, model_path)
                line = "\t".join(str(row.get(h, "")) for h in header)
                run.rows.append(line)
                tsv.write(line + "\n")
                tsv.flush()
                run.step = step
                if step % progress_every == 0 or step == params.steps:
                    _progress(step, params.steps, recent, time.perf_counter() - t0
                              - run.elapsed_s, step - start_step)
                    recent = []
                if stop or (params.checkpoint_every and step % params.checkpoint_every == 0
                            and step < params.steps):
                    run.elapsed_s = time.perf_counter() - t0
                    _save_state(state_path, fingerprint, run, model, opt, sched, sampler,
                                n_threads)
                if stop:
                    log.warning("SIGTERM at step %d/%d: state saved to %s; rerun to resume",
                                step, params.steps, state_path)
                    raise SystemExit(128 + stop["sig"])
                if step_hook is not None:
                    step_hook(step)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    run.elapsed_s = time.perf_counter() - t0
    last_meta = {**base, "step": params.steps}
    _save_state_dict(_cpu_state(model), last_meta, last_path)
    _write_rows(log_path, header, run.rows)
    summary = {"steps": params.steps, "best": run.best, "elapsed_s": run.elapsed_s,
               "device": str(device), "threads": n_threads, "resumes": run.resumes,
               "resumed_from": run.resumed_from}
    if card_path is not None:
        io.write_json(card_path, model_card(base, model, norm, summary))
    shutil.rmtree(ckdir, ignore_errors=True)
    log.info("best step %d, mean validation PCC %.4f, %.0f s%s", run.best["step"],
             run.best["val_pcc_mean"], run.elapsed_s,
             f" ({run.resumes} resume(s), from step {run.resumed_from})" if run.resumes
             else "")
    return run.best


def _write_rows(path: str | Path, header: list[str], rows: list[str]) -> None:
    io.write_text(path, "\n".join(["\t".join(header), *rows]) + "\n")


def _names(tiles_npz: list[str | Path]) -> list[str]:
    return [Path(p).stem for p in tiles_npz]


def _save_state_dict(state: dict, meta: dict, path: str | Path) -> None:
    with io.atomic_path(path) as tmp:
        torch.save({**meta, "state_dict": state}, tmp)


def _save(model: torch.nn.Module, meta: dict, path: str | Path) -> None:
    _save_state_dict(_cpu_state(model), meta, path)


def run(tiles_npz: list[str], ingest_json: str, unet: dict, settings: dict, tiles: dict,
        seed: int, threads: int, model_path: str, last_path: str, log_path: str,
        card_path: str | None = None) -> dict:
    """Train from the rule's inputs (channels read from one ingest JSON)."""
    params = TrainParams(**settings, seed=seed)
    tile_size, margin = int(tiles["tile_size"]), int(tiles["margin"])
    channels = [{k: c[k] for k in ("name", "excitation_nm", "emission_nm")}
                for c in io.read_json(ingest_json)["fm"]["channels"]]
    return train(tiles_npz, unet, params, tile_size, margin, channels, model_path,
                 last_path, log_path, threads, card_path=card_path)
