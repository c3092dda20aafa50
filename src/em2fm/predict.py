"""Predict: whole-section virtual fluorescence from EM alone.

The EM of a section is resampled to the network's input grid, predicted in
overlapping windows (each with ``margin`` target px of EM context, of which
only the centre is kept) and written as an OME-TIFF in the Odemis dialect:
one named channel per FM channel, float32 in the FM's camera units (ADU), with
its pixel size and centre position in the same stage frame as the exports,
so it overlays the EM by metadata alone (also in Odemis).

With test-time augmentation the 8 flips/rotations are averaged; their
standard deviation is written as a second file, the per-pixel uncertainty.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from . import io
from .geometry import geometry_from_meta
from .odemis import Channel, OdemisImage, write_file
from .tiles import TargetGrid, make_grid, prepare_em
from .unet import AsymmetricUNet, UNetConfig, build

log = logging.getLogger(__name__)


def choose_device(requested: str = "auto") -> torch.device:
    """``cuda`` when requested or available (auto), else ``cpu``."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; "
                           "set it to auto or cpu")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def set_threads(threads: int) -> int:
    """Use the granted threads, but not more than the CPUs this process may run on."""
    n = max(1, min(int(threads), len(os.sched_getaffinity(0))))
    torch.set_num_threads(n)
    return n


def load_model(path: str | Path, device: torch.device) -> tuple[AsymmetricUNet, dict]:
    """Load a checkpoint written by ``train`` (``weights_only=True``)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = build(UNetConfig(**ckpt["model"]))
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return model, ckpt


def _window_size(requested: int, margin: int, em_scale: int, multiple: int) -> int:
    """Smallest window ≥ requested whose input ``(w + 2·margin)·em_scale`` fits the net."""
    w = max(1, requested)
    while ((w + 2 * margin) * em_scale) % multiple:
        w += 1
    return w


def _starts(n: int, w: int) -> list[int]:
    starts = list(range(0, n - w + 1, w))
    if starts[-1] + w < n:
        starts.append(n - w)
    return starts


_DIHEDRAL = [(k, flip) for flip in (False, True) for k in range(4)]


def _apply(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1))


def _invert(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, -k, dims=(-2, -1))
    if flip:
        x = torch.flip(x, dims=(-1,))
    return x


@torch.no_grad()
def predict_work(
    model: AsymmetricUNet,
    em_work: np.ndarray,
    margin: int,
    window: int = 128,
    tta: bool = False,
    device: torch.device | None = None,
    batch: int = 4,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predict the target grid of a prepared EM work image.

    Args:
        model: network in eval mode.
        em_work: z-scored EM on the work grid, (H·s, W·s).
        margin: EM context around each window, in target px.
        window: output window edge in target px (rounded up to fit the net).
        tta: average the 8 flips/rotations and return their std.
        device: torch device (default: the model's).
        batch: windows per forward pass.

    Returns:
        ``(mean, std)``, (C, H, W) float32 in normalised units; ``std`` None without TTA.
    """
    cfg = model.cfg
    s = cfg.em_scale
    device = device or next(model.parameters()).device
    h, w = em_work.shape[0] // s, em_work.shape[1] // s
    win = _window_size(window, margin, s, cfg.multiple)
    hp, wp = max(h, win), max(w, win)
    pad = margin * s
    padded = np.pad(em_work[: h * s, : w * s],
                    ((pad, pad + (hp - h) * s), (pad, pad + (wp - w) * s)), mode="reflect")
    origins = [(r, c) for r in _starts(hp, win) for c in _starts(wp, win)]
    transforms = _DIHEDRAL if tta else _DIHEDRAL[:1]
    total = np.zeros((cfg.out_channels, hp, wp), np.float64)
    total_sq = np.zeros_like(total)
    size = (win + 2 * margin) * s
    for i in range(0, len(origins), batch):
        chunk = origins[i: i + batch]
        x = torch.from_numpy(np.stack([padded[r * s: r * s + size, c * s: c * s + size]
                                       for r, c in chunk])[:, None]).to(device)
        acc = torch.zeros((len(chunk), cfg.out_channels, win, win), dtype=torch.float64)
        acc_sq = torch.zeros_like(acc)
        for k, flip in transforms:
            y = _invert(model(_apply(x, k, flip)), k, flip).float().cpu().double()
            y = y[:, :, margin: margin + win, margin: margin + win]
            acc += y
            acc_sq += y * y
        for j, (r, c) in enumerate(chunk):
            total[:, r: r + win, c: c + win] = acc[j].numpy()
            total_sq[:, r: r + win, c: c + win] = acc_sq[j].numpy()
    n = len(transforms)
    mean = (total / n)[:, :h, :w]
    if not tta:
        return mean.astype(np.float32), None
    var = np.maximum(total_sq[:, :h, :w] / n - mean**2, 0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def denormalise(pred: np.ndarray, ckpt: dict) -> np.ndarray:
    """Normalised units → FM camera units (ADU), with the training statistics."""
    mean = np.asarray(ckpt["target_mean"], np.float32)[:, None, None]
    std = np.asarray(ckpt["target_std"], np.float32)[:, None, None]
    return pred * std + mean


#: EM pixels up to this factor coarser than the network's input pixel are accepted.
EM_COARSER_TOLERANCE = 1.5


def section_grid(ingest_meta: dict, ckpt: dict, pixel_size_nm: float | None = None
                 ) -> TargetGrid:
    """Target grid of a section for this model: always the model's own pixel size.

    The network saw EM at ``target_pixel_size_m / em_scale`` per input pixel in training;
    the EM of every section is resampled to exactly that, whatever the section's FM pixel
    size (another objective or binning) or ``pixel_size_nm`` (tiles.pixel_size_nm, which
    made the model's grid when it was trained here; a different value is logged).

    Raises:
        ValueError: the SEM pixel is more than ``EM_COARSER_TOLERANCE`` times coarser than
            the network's input pixel (the EM lacks the detail the model was trained on).
    """
    em_geom = geometry_from_meta(ingest_meta["em"])
    px = float(ckpt["target_pixel_size_m"])
    em_scale = int(ckpt["model"]["em_scale"])
    if pixel_size_nm is not None and abs(float(pixel_size_nm) * 1e-9 - px) > 1e-3 * px:
        log.warning("tiles.pixel_size_nm %.4g nm differs from the model's %.4g nm: the "
                    "model's is used", float(pixel_size_nm), px * 1e9)
    em_px = float(em_geom.pixel_size_m[0])
    if em_px > EM_COARSER_TOLERANCE * px / em_scale:
        raise ValueError(
            f"{ingest_meta['section']}: the SEM pixel ({em_px * 1e9:.4g} nm) is coarser than "
            f"the model's EM input pixel ({px / em_scale * 1e9:.4g} nm = "
            f"{px * 1e9:.4g} nm / em_scale {em_scale}) by more than {EM_COARSER_TOLERANCE}×: "
            "the EM lacks the detail the model was trained on. Fix: acquire the SEM at "
            "the model's pixel size or finer, or train a model on such data")
    return make_grid(em_geom, px, em_scale)


def prediction_image(data: np.ndarray, grid: TargetGrid, channels: list[Channel],
                     name: str, extra: dict) -> OdemisImage:
    """An Odemis image placed on the target grid."""
    g = grid.geometry
    return OdemisImage(
        name=name, data=data.astype(np.float32), channels=channels,
        shape_cyx=data.shape, dtype="float32", pixel_size_m=g.pixel_size_m,
        centre_m=g.centre_m, rotation_rad=g.rotation_rad, shear=g.shear,
        extra_settings=extra,
    )


def run(ingest_json: str | Path, ingest_npz: str | Path, model_path: str | Path,
        pixel_size_nm: float | None, settings: dict, device: str, threads: int,
        prediction_path: str | Path, uncertainty_path: str | Path,
        model_card: dict | None = None) -> None:
    """Predict one section from its EM and write both OME-TIFFs (the rule's entry point).

    The grid is the model's own (:func:`section_grid`); ``model_card``
    (:func:`em2fm.pretrained.model_card`, for a given model) adds its checksum to the
    metadata.
    """
    window, tta = int(settings["window"]), bool(settings["test_time_augmentation"])
    n = set_threads(threads)
    dev = choose_device(device)
    model, ckpt = load_model(model_path, dev)
    meta = io.read_json(ingest_json)
    em = io.load_npz(ingest_npz)["em"]  # only the EM is read: prediction never sees FM
    grid = section_grid(meta, ckpt, pixel_size_nm)
    em_work = prepare_em(em, geometry_from_meta(meta["em"]), grid)
    mean, std = predict_work(model, em_work, int(ckpt["margin"]), window, tta, dev)
    channels = [Channel(c["name"], c.get("excitation_nm"), c.get("emission_nm"))
                for c in ckpt["channels"]]
    extra = {"em2fm": {"model": str(model_path),
                       **({"model_sha256": model_card["sha256"]} if model_card else {}),
                       "section": meta["section"],
                       "em_source": meta["em"].get("source"), "test_time_augmentation": tta,
                       "units": "FM camera counts (ADU) of the training data"}}
    write_file(prediction_path,
               [prediction_image(denormalise(mean, ckpt), grid, channels, "Prediction", extra)],
               thumbnail=False, software="em2fm")
    scale = np.asarray(ckpt["target_std"], np.float32)[:, None, None]
    unc = std * scale if std is not None else np.zeros_like(mean)
    unc_channels = [Channel(f"{c.name} uncertainty", c.excitation_nm, c.emission_nm)
                    for c in channels]
    write_file(uncertainty_path,
               [prediction_image(unc, grid, unc_channels, "Prediction uncertainty", extra)],
               thumbnail=False, software="em2fm")
    log.info("%s: predicted %s target px at %.1f nm on %s (%d threads), TTA %s",
             meta["section"], grid.shape_yx, grid.pixel_size_m * 1e9, dev, n, tta)
