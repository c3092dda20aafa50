"""Predict: whole-section virtual fluorescence from EM alone.

The EM of a section is read lazily, resampled to the network's input grid region
by region (:mod:`em2fm.lazy`), predicted window by window with the receptive field
as context (:mod:`em2fm.inference`) and written band by band as a tiled pyramidal
OME-TIFF in the Odemis dialect (:mod:`em2fm.pyramid`): one named channel per FM
channel, float32 in the FM's camera units (ADU), with its pixel size and centre
position in the same stage frame as the exports, so it overlays the EM by metadata
alone (in Odemis, Fiji/Bio-Formats, napari). Memory does not grow with the section.

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
    EMSource,
    InferenceSettings,
    WindowedPredictor,
    choose_device,
    model_margin,
    predict_array,
    set_threads,
)
from .lazy import PreparedEM, open_array
from .odemis import Channel, OdemisImage
from .pyramid import PlaneSink, write_pyramid
from .tiles import TargetGrid, make_grid
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
    batch: int | None = None,
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
        batch: windows per forward pass (None: automatic, see :mod:`em2fm.inference`).
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


def placed_image(shape_cyx: tuple[int, int, int], grid: TargetGrid, channels: list[Channel],
                 name: str, extra: dict) -> OdemisImage:
    """Metadata of an Odemis image on the target grid (no pixels: they are streamed)."""
    g = grid.geometry
    return OdemisImage(
        name=name, data=None, channels=channels, shape_cyx=shape_cyx, dtype="float32",
        pixel_size_m=g.pixel_size_m, centre_m=g.centre_m, rotation_rad=g.rotation_rad,
        shear=g.shear, extra_settings=extra,
    )


def predict_to_files(model: AsymmetricUNet, source: EMSource, grid: TargetGrid, ckpt: dict,
                     settings: InferenceSettings, device: torch.device,
                     channels: list[Channel], extra: dict, prediction_path: str | Path,
                     uncertainty_path: str | Path) -> None:
    """Predict window by window and write both pyramidal OME-TIFFs, in bounded memory.

    Finished rows go to temporary files beside the outputs as they come
    (:class:`em2fm.pyramid.PlaneSink`); the tiled pyramids are then written from them.
    Without TTA the uncertainty file holds zeros.
    """
    model.eval()
    predictor = WindowedPredictor(model, model_margin(model, ckpt.get("margin")), settings,
                                  device)
    c = len(channels)
    shape = (c, *grid.shape_yx)
    mean_t = np.asarray(ckpt["target_mean"], np.float32)[:, None, None]
    std_t = np.asarray(ckpt["target_std"], np.float32)[:, None, None]
    pred = PlaneSink(Path(prediction_path).parent, shape)
    unc = PlaneSink(Path(uncertainty_path).parent, shape)
    try:
        for r, block, sblock in predictor.iter_rows(source):
            pred.write(r, block * std_t + mean_t)
            unc.write(r, sblock * std_t if sblock is not None else np.zeros_like(block))
        pred.close()
        unc.close()
    except BaseException:
        pred.remove()
        unc.remove()
        raise
    unc_channels = [Channel(f"{ch.name} uncertainty", ch.excitation_nm, ch.emission_nm)
                    for ch in channels]
    write_pyramid(prediction_path, placed_image(shape, grid, channels, "Prediction", extra),
                  pred)
    write_pyramid(uncertainty_path, placed_image(shape, grid, unc_channels,
                                                 "Prediction uncertainty", extra), unc)


def run(ingest_json: str | Path, ingest_npz: str | Path, model_path: str | Path,
        pixel_size_nm: float | None, settings: dict, device: str, threads: int,
        prediction_path: str | Path, uncertainty_path: str | Path,
        model_card: dict | None = None) -> None:
    """Predict one section from its EM and write both OME-TIFFs (the rule's entry point).

    The grid is the model's own (:func:`section_grid`); ``model_card``
    (:func:`em2fm.pretrained.model_card`, for a given model) adds its checksum to the
    metadata.
    """
    tta = bool(settings["test_time_augmentation"])
    n = set_threads(threads)
    dev = choose_device(device)
    model, ckpt = load_model(model_path, dev)
    meta = io.read_json(ingest_json)
    em = open_array(ingest_npz, "em")  # only the EM is read (lazily): never the FM
    grid = section_grid(meta, ckpt, pixel_size_nm)
    source = PreparedEM(em, geometry_from_meta(meta["em"]), grid,
                        normalisation=ckpt.get("em_normalisation", "zscore"))
    channels = [Channel(c["name"], c.get("excitation_nm"), c.get("emission_nm"))
                for c in ckpt["channels"]]
    extra = {"em2fm": {"model": str(model_path),
                       **({"model_sha256": model_card["sha256"]} if model_card else {}),
                       "section": meta["section"],
                       "em_source": meta["em"].get("source"), "test_time_augmentation": tta,
                       "units": "FM camera counts (ADU) of the training data"}}
    inference = InferenceSettings(window=int(settings["window"]),
                                  overlap=int(settings.get("overlap", 0)), tta=tta)
    predict_to_files(model, source, grid, ckpt, inference, dev, channels, extra,
                     prediction_path, uncertainty_path)
    log.info("%s: predicted %s target px at %.1f nm on %s (%d threads), TTA %s",
             meta["section"], grid.shape_yx, grid.pixel_size_m * 1e9, dev, n, tta)
