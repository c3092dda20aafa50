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
from pathlib import Path

import numpy as np
import torch

from . import io
from .geometry import geometry_from_meta
from .inference import (
    InferenceSettings,
    choose_device,
    model_margin,
    predict_array,
    set_threads,
)
from .odemis import Channel, OdemisImage, write_file
from .tiles import TargetGrid, make_grid, prepare_em, target_pixel_m
from .unet import AsymmetricUNet, UNetConfig, build

log = logging.getLogger(__name__)


def load_model(path: str | Path, device: torch.device) -> tuple[AsymmetricUNet, dict]:
    """Load a checkpoint written by ``train`` (``weights_only=True``)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = build(UNetConfig(**ckpt["model"]))
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return model, ckpt


def predict_work(
    model: AsymmetricUNet,
    em_work: np.ndarray,
    margin: int,
    window: int = 64,
    tta: bool = False,
    device: torch.device | None = None,
    batch: int = 8,
    overlap: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predict the target grid of a prepared EM work image (see :mod:`em2fm.inference`).

    Args:
        model: the network.
        em_work: z-scored EM on the work grid, (H·s, W·s).
        margin: EM context around each window, in target px (raised to the receptive
            field when smaller).
        window: output window edge in target px (rounded up to the pooling period).
        tta: average the 8 flips/rotations and return their std.
        device: torch device (default: the model's).
        batch: windows per forward pass.
        overlap: target px blended between neighbouring windows.

    Returns:
        ``(mean, std)``, (C, H, W) float32 in normalised units; ``std`` None without TTA.
    """
    settings = InferenceSettings(window=window, overlap=overlap, tta=tta, batch=batch)
    return predict_array(model, em_work, model_margin(model, margin), settings, device)


def denormalise(pred: np.ndarray, ckpt: dict) -> np.ndarray:
    """Normalised units → FM camera units (ADU), with the training statistics."""
    mean = np.asarray(ckpt["target_mean"], np.float32)[:, None, None]
    std = np.asarray(ckpt["target_std"], np.float32)[:, None, None]
    return pred * std + mean


def section_grid(ingest_meta: dict, ckpt: dict, pixel_size_nm: float | None) -> TargetGrid:
    """Target grid of a section for this model (pixel size: config, FM, or the model's)."""
    em_geom = geometry_from_meta(ingest_meta["em"])
    if pixel_size_nm is None and "fm" not in ingest_meta:
        px = float(ckpt["target_pixel_size_m"])
    else:
        px = target_pixel_m(ingest_meta, pixel_size_nm)
    return make_grid(em_geom, px, int(ckpt["model"]["em_scale"]))


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
        prediction_path: str | Path, uncertainty_path: str | Path) -> None:
    """Predict one section from its EM and write both OME-TIFFs (the rule's entry point)."""
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
    extra = {"em2fm": {"model": str(model_path), "section": meta["section"],
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
