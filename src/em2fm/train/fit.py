"""The training loop (resumable) and the rule's entry point."""

from __future__ import annotations

import logging
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import io
from ..inference import InferenceSettings, choose_device, predict_array, set_threads
from ..metrics import pcc
from ..receptive import DEFAULT_STEM, resolve_margin
from ..tiles import normalise_em
from ..unet import UNetConfig, build, n_parameters
from .card import model_card
from .data import (
    Normalisation,
    SectionData,
    WindowSampler,
    load_sections,
    normalisation,
    trustworthy,
)
from .resume import (
    RunState,
    checkpoint_dir_for,
    cpu_state,
    load_state,
    run_fingerprint,
    save_state,
)

log = logging.getLogger(__name__)

#: fraction of the training run with a linear learning-rate warm-up (make_optimiser)
WARMUP_FRACTION = 0.05


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
    em_normalisation: str = "percentile"  # percentile | zscore (per section)
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
    preds, truths = [], []
    for s in sections:  # the windowed inference of prediction, with the same context
        pred, _ = predict_array(model, s.em, margin, InferenceSettings(window=96), device)
        preds.append(pred[:, s.mask])
        truths.append(norm.target(s)[:, s.mask])
    p, t = np.concatenate(preds, axis=1), np.concatenate(truths, axis=1)
    return float(np.mean((p - t) ** 2)), [pcc(p[c], t[c]) for c in range(p.shape[0])]


def _progress(step: int, steps: int, losses: list[float], elapsed: float, since: int) -> None:
    rate = elapsed / max(since, 1)
    left = rate * (steps - step)
    log.info("step %d/%d (%.0f%%): train loss %.4f (mean of the last %d), %.2f s/step, "
             "%s left", step, steps, 100 * step / steps, float(np.mean(losses)), len(losses),
             rate, _duration(left))


def _duration(s: float) -> str:
    s = round(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def make_optimiser(model: torch.nn.Module, params: TrainParams
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (``learning_rate``, ``weight_decay``) with a linear warm-up over the first
    :data:`WARMUP_FRACTION` of ``steps`` and a cosine decay to 0 at ``steps``
    (:func:`cosine_decay`); step the scheduler once per step."""
    opt = torch.optim.AdamW(model.parameters(), lr=params.learning_rate,
                            weight_decay=params.weight_decay)
    warmup = max(1, int(params.steps * WARMUP_FRACTION))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * cosine_decay(i, params.steps))
    return opt, sched


def cosine_decay(done: float, total: float) -> float:
    """Learning-rate factor of the cosine schedule: 1 when ``done`` is 0, 0 from ``total`` on
    (both in steps, or both in seconds)."""
    return 0.5 * (1 + math.cos(math.pi * min(done, total) / total))


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
    opt, sched = make_optimiser(model, params)
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
    run = RunState(rows=[], best={"step": 0, "val_pcc_mean": -math.inf}, resumed_from=[])
    state = load_state(state_path, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sampler.set_state(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        run = RunState(step=int(state["step"]), elapsed_s=float(state["elapsed_s"]),
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
    start_step, start_elapsed, recent = run.step, run.elapsed_s, []
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
                        run.best_state = cpu_state(model)
                        _save_state_dict(run.best_state, {**base, **run.best}, model_path)
                line = "\t".join(str(row.get(h, "")) for h in header)
                run.rows.append(line)
                tsv.write(line + "\n")
                tsv.flush()
                run.step = step
                if step % progress_every == 0 or step == params.steps:
                    _progress(step, params.steps, recent, time.perf_counter() - t0
                              - start_elapsed, step - start_step)
                    recent = []
                if stop or (params.checkpoint_every and step % params.checkpoint_every == 0
                            and step < params.steps):
                    run.elapsed_s = time.perf_counter() - t0
                    save_state(state_path, fingerprint, run, model, opt, sched, sampler,
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
    _save_state_dict(cpu_state(model), last_meta, last_path)
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
    _save_state_dict(cpu_state(model), meta, path)


def run(tiles_npz: list[str], ingest_json: str, unet: dict, settings: dict, tiles: dict,
        seed: int, threads: int, model_path: str, last_path: str, log_path: str,
        card_path: str | None = None) -> dict:
    """Train from the rule's inputs (channels read from one ingest JSON)."""
    params = TrainParams(**settings, seed=seed)
    tile_size = int(tiles["tile_size"])
    margin = resolve_margin(tiles.get("margin"), int(unet["depth"]), int(tiles["em_scale"]),
                            unet.get("stem", DEFAULT_STEM))
    channels = [{k: c[k] for k in ("name", "excitation_nm", "emission_nm")}
                for c in io.read_json(ingest_json)["fm"]["channels"]]
    return train(tiles_npz, unet, params, tile_size, margin, channels, model_path,
                 last_path, log_path, threads, card_path=card_path)
