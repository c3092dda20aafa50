"""Entry points of the registration rules: one JSON per section and round, then the final one.

- round 0 (:func:`run_multimodal`, rule ``register``): stage metadata + multimodal search;
- round r ≥ 1 (:func:`run_refine`, rule ``register_refine``): the measured FM registered to the
  prediction of the model trained on round r − 1;
- final (:func:`run_final`, rule ``register_final``): the last round with the history of all
  rounds, the ``stop`` policy applied, and the QC overlay.

Bounded memory: the EM is never loaded whole. It is read from the ingest npz region by
region (:func:`em2fm.lazy.open_array`): smoothed to the registration pixel block by block
(:func:`em2fm.geometry.smooth_resample_regions`), prepared window by window for the
model's prediction (:class:`em2fm.lazy.PreparedEM`); only the FM member is loaded.

Every round's JSON holds ``fm_to_em_px`` (3×3 row-major affine, FM px x=column,
y=row, pixel centres at integers → EM px) *after* the policy for failed sections
(the stage metadata replaces a failed estimate), ``status`` (ok, low_confidence,
failed), ``reasons``, ``use_for_training`` and the ``evidence``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from .. import io
from ..geometry import em_field_fm_pixels, geometry_from_meta
from ..lazy import PreparedEM, open_array
from .landscape import CaptureRange, correction_summary, rms_difference_px
from .multimodal import METRICS, RegistrationParams, register_images
from .qc import overlay_png
from .refine import refine_to_prediction
from .status import (
    RegistrationFailed,
    StatusParams,
    multimodal_status,
    refine_status,
    use_for_training,
)

log = logging.getLogger(__name__)


def _fields(cls: type, settings: dict, **extra: object) -> object:
    keys = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in settings.items() if k in keys}, **extra)


def params_from_config(settings: dict, seed: int) -> RegistrationParams:
    """RegistrationParams from the config ``register`` mapping."""
    return _fields(RegistrationParams, settings, seed=seed)  # type: ignore[return-value]


def status_params(settings: dict) -> StatusParams:
    """StatusParams from the config ``register`` mapping."""
    return _fields(StatusParams, settings)  # type: ignore[return-value]


def _effective(status: str, estimate: np.ndarray, metadata: np.ndarray) -> np.ndarray:
    """The transform used downstream: the stage metadata replaces a failed estimate."""
    return metadata.copy() if status == "failed" else estimate


def _round_entry(doc: dict) -> dict:
    keys = ("round", "method", "status", "reasons", "fm_to_em_px", "estimate_fm_to_em_px",
            "correction", "seconds")
    entry = {k: doc[k] for k in keys}
    entry["accepted"] = doc["evidence"].get("accepted", True)
    entry["second_peak_ratio"] = doc["evidence"]["landscape"]["second_peak_ratio"]
    return entry


def _log_round(doc: dict) -> None:
    corr = doc["correction"]
    log.info("%s round %d (%s): %s; correction %.0f nm, %.3f°, scale %+.3f %%, %.1f s",
             doc["section"], doc["round"], doc["method"], doc["status"],
             corr["shift_magnitude_nm"], corr["rotation_deg"], 100 * corr["scale_error"],
             doc["seconds"])
    for reason in doc["reasons"]:
        (log.warning if doc["status"] != "ok" else log.info)("%s: %s", doc["section"], reason)


def _channel(meta: dict, channel: str | None) -> int:
    names = [c["name"] for c in meta["fm"]["channels"]]
    channel = channel or names[0]
    if channel not in names:
        raise ValueError(f"register.channel {channel!r} is not among the ingested channels "
                         f"{names}; set it to one of them")
    return names.index(channel)


def run_multimodal(ingest_json: str | Path, ingest_npz: str | Path, channel: str | None,
                   settings: dict, seed: int, json_path: str | Path) -> dict:
    """Round 0: register one section by the multimodal search; write its JSON."""
    params = params_from_config(settings, seed)
    checks = status_params(settings)
    meta = io.read_json(ingest_json)
    if meta.get("fm") is None:
        raise ValueError(
            f"{ingest_json}: section {meta['section']!r} has the role predict (EM only), so "
            "there is no FM to register. Fix: ask for its prediction "
            f"(results/predictions/{meta['section']}.ome.tif), or give it the role train, "
            "val or test in the section sheet (its folder must hold its FM exports)")
    fm = io.load_npz(ingest_npz, keys=("fm",))["fm"]
    ci = _channel(meta, channel)
    em_geom = geometry_from_meta(meta["em"])
    result = register_images(open_array(ingest_npz, "em"), em_geom, fm[ci],
                             geometry_from_meta(meta["fm"]), params)
    status, reasons = multimodal_status(result.bound_violations, result.warnings,
                                        result.landscape.second_peak_ratio, checks)
    effective = _effective(status, result.fm_to_em_px, result.fm_to_em_px_metadata)
    estimate_correction = result.correction(em_geom.shape_yx, em_geom.pixel_size_m[0])
    doc = {
        "section": meta["section"], "round": 0, "method": "multimodal",
        "status": status, "reasons": reasons,
        "use_for_training": use_for_training(status, checks),
        "on_failure": checks.on_failure,
        "fm_to_em_px": effective,
        "fm_to_em_px_metadata": result.fm_to_em_px_metadata,
        "fm_to_em_px_multimodal": result.fm_to_em_px,
        "estimate_fm_to_em_px": result.fm_to_em_px,
        "channel": meta["fm"]["channels"][ci]["name"],
        "transform": params.transform,
        "correction": correction_summary(effective, result.fm_to_em_px_metadata,
                                         em_geom.shape_yx, em_geom.pixel_size_m[0]),
        "estimate_correction": estimate_correction,
        "evidence": {
            "distance_from_metadata_nm": estimate_correction["shift_magnitude_nm"],
            "metric": {"name": params.metric, "description": METRICS[params.metric],
                       "stage_metadata": result.metric_metadata,
                       "registered": result.metric_registered},
            "landscape": result.landscape.as_dict(),
            "bound_violations": result.bound_violations,
            "starts": result.starts,
            "capture_range": dataclasses.asdict(params.capture),
        },
        "params": {**dataclasses.asdict(params), **dataclasses.asdict(checks)},
        "seconds": result.seconds,
    }
    doc["rounds"] = [_round_entry(doc)]
    _log_round(doc)
    io.write_json(json_path, doc)
    return doc


def predict_for_registration(em, ingest_meta: dict, model, ckpt: dict,
                             pixel_size_nm: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The model's prediction from a section's EM (no TTA) and its target px → EM px affine.

    ``em``: the EM as an array or a region reader (:func:`em2fm.lazy.open_array`); it is
    prepared window by window (:class:`em2fm.lazy.PreparedEM`), so only the prediction
    (target grid) is held whole. Only the EM is read; the prediction's units do not matter
    to the NCC.
    """
    from ..inference import InferenceSettings, model_margin, predict_array
    from ..montage import ArrayReader
    from ..predict import section_grid

    grid = section_grid(ingest_meta, ckpt, pixel_size_nm)
    reader = ArrayReader(em) if isinstance(em, np.ndarray) else em
    source = PreparedEM(reader, geometry_from_meta(ingest_meta["em"]), grid,
                        normalisation=ckpt.get("em_normalisation", "zscore"))
    pred, _ = predict_array(model, source, model_margin(model, int(ckpt["margin"])),
                            InferenceSettings(window=64))
    return pred, grid.target_to_em_px


def run_refine(ingest_json: str | Path, ingest_npz: str | Path, previous_json: str | Path,
               model_path: str | Path, round_: int, settings: dict,
               pixel_size_nm: float | None, device: str, threads: int,
               json_path: str | Path) -> dict:
    """Round ``round_`` ≥ 1: register the measured FM to the model's prediction; write JSON."""
    from ..predict import choose_device, load_model, set_threads

    checks = status_params(settings)
    capture = params_from_config(settings, 0).capture
    meta = io.read_json(ingest_json)
    prev = io.read_json(previous_json)
    fm = io.load_npz(ingest_npz, keys=("fm",))["fm"]
    em_geom = geometry_from_meta(meta["em"])
    set_threads(threads)
    dev = choose_device(device)
    model, ckpt = load_model(model_path, dev)
    pred, target_to_em = predict_for_registration(open_array(ingest_npz, "em"), meta, model,
                                                  ckpt, pixel_size_nm)

    metadata = np.asarray(prev["fm_to_em_px_metadata"])
    previous = np.asarray(prev["fm_to_em_px"])
    result = refine_to_prediction(fm, pred, target_to_em, previous,
                                  metadata, em_geom.shape_yx, em_geom.pixel_size_m[0], capture)
    multimodal_est = np.asarray(prev["fm_to_em_px_multimodal"])
    mm_status = prev["rounds"][0]["status"]
    pts = em_field_fm_pixels(tuple(meta["fm"]["shape"][-2:]), result.candidate,
                             em_geom.shape_yx)
    agreement = (rms_difference_px(result.candidate, multimodal_est, pts)
                 if mm_status != "failed" else None)
    status, evidence_ok, reasons = refine_status(
        prev["status"], mm_status, result.ncc_candidate, result.landscape.second_peak_ratio,
        result.bound_violations, agreement, checks, previous_confirmed=prev["round"] > 0,
        accepted=result.accepted)
    estimate = result.fm_to_em_px if evidence_ok else previous
    effective = _effective(status, estimate, metadata)
    estimate_correction = correction_summary(result.candidate, metadata, em_geom.shape_yx,
                                             em_geom.pixel_size_m[0])
    doc = {
        **{k: prev[k] for k in ("section", "channel", "transform", "fm_to_em_px_metadata",
                                "fm_to_em_px_multimodal", "on_failure")},
        "round": round_, "method": "prediction", "status": status, "reasons": reasons,
        "use_for_training": use_for_training(status, checks),
        "fm_to_em_px": effective,
        "estimate_fm_to_em_px": result.candidate,
        "correction": correction_summary(effective, metadata, em_geom.shape_yx,
                                         em_geom.pixel_size_m[0]),
        "estimate_correction": estimate_correction,
        "evidence": {
            "distance_from_metadata_nm": estimate_correction["shift_magnitude_nm"],
            "ncc_previous": result.ncc_previous, "ncc_estimate": result.ncc_candidate,
            "accepted": bool(result.accepted and evidence_ok),
            "landscape": result.landscape.as_dict(),
            "bound_violations": result.bound_violations,
            "agreement_with_multimodal_fm_px": agreement,
            "change_from_previous_fm_px": rms_difference_px(effective, previous, pts),
            "model": str(model_path),
            "capture_range": dataclasses.asdict(capture),
        },
        "params": prev["params"],
        "seconds": result.seconds,
    }
    doc["rounds"] = [*prev["rounds"], _round_entry(doc)]
    _log_round(doc)
    io.write_json(json_path, doc)
    return doc


def run_final(ingest_json: str | Path, ingest_npz: str | Path, last_json: str | Path,
              json_path: str | Path, png_path: str | Path) -> dict:
    """The final registration of a section: the last round, the ``stop`` policy, QC overlay.

    Raises:
        RegistrationFailed: the section failed and ``register.on_failure`` is ``stop``.
    """
    doc = io.read_json(last_json)
    if doc["status"] == "failed" and doc["on_failure"] == "stop":
        raise RegistrationFailed(
            f"{ingest_json}: the registration of section {doc['section']} failed: "
            + "; ".join(doc["reasons"]) + ". Fix: check the section's stage metadata, widen "
            "register.max_shift_um / max_rotation_deg / max_scale if the error is larger, or "
            "set register.on_failure to exclude (leave the section out of training) or "
            "metadata (trust the stage metadata)")
    meta = io.read_json(ingest_json)
    fm = io.load_npz(ingest_npz, keys=("fm",))["fm"]
    ci = [c["name"] for c in meta["fm"]["channels"]].index(doc["channel"])
    transforms = {"stage metadata": np.asarray(doc["fm_to_em_px_metadata"]),
                  "multimodal": np.asarray(doc["fm_to_em_px_multimodal"])}
    if doc["round"] > 0:
        transforms[f"after round {doc['round']}"] = np.asarray(doc["fm_to_em_px"])
    overlay_png(open_array(ingest_npz, "em"), geometry_from_meta(meta["em"]), fm[ci],
                transforms,
                png_path, f"{doc['section']}: {doc['channel']} on EM — {doc['status']}")
    io.write_json(json_path, doc)
    return doc


__all__ = ["CaptureRange", "run_final", "run_multimodal", "run_refine"]
