"""Evaluate: Pearson correlation of prediction and measured FM, against baselines and truth.

Per section × channel, inside the FM/EM overlap (the tiles mask):

- ``pcc``, ``r2``, ``ssim``, ``nrmse``: prediction vs the registered, measured FM
  (:mod:`em2fm.metrics`; SSIM and NRMSE also depend on the intensity scale, PCC does not);
- ``pcc_baseline_em``: trivial baseline, the EM blurred to FM resolution with
  the sign (inverted or not) that correlates best on the training sections;
- ``r2_baseline_mean`` / ``nrmse_baseline_mean``: R² / NRMSE of the constant training
  mean (its PCC and SSIM structure are undefined);

and, where the ground truth of a simulation is known (evaluation is the only
stage that may read it):

- ``noise_ceiling_pcc``: PCC of the measured FM against its noise-free version
  on the FM's own pixels under the EM field: no prediction can beat it on
  average;
- ``pcc_vs_clean`` / ``pcc_vs_specific``: prediction vs the noise-free FM /
  vs the specific label alone (no aspecific binding, no bleed-through),
  placed with the true transform;
- ``target_vs_clean_pcc``: the training target (registered, measured FM) vs
  the noise-free FM: what noise and registration error leave of the truth;
- ``registration_error_nm`` / ``multimodal_error_nm`` / ``metadata_error_nm``:
  RMS distance between the final (or multimodal round-0, or stage-metadata) and
  the true FM→EM mapping over the FM pixels under the EM field.

Each row carries its section's ``registration_status`` (ok, low_confidence,
failed): a PCC against a misregistered FM measures the registration, not the
network. :func:`registration_rounds` lists every registration round of every
section, with its error against the truth where known.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import io
from .geometry import em_field_fm_pixels, geometry_from_meta, rms_displacement
from .metrics import nrmse, pcc, r2, ssim
from .odemis import read_file
from .tiles import registered_fm

log = logging.getLogger(__name__)

COLUMNS = [
    "section", "split", "registration_status", "channel", "n_pixels", "pcc", "r2", "ssim",
    "nrmse", "pcc_baseline_em", "r2_baseline_mean", "nrmse_baseline_mean", "noise_ceiling_pcc",
    "pcc_vs_clean", "pcc_vs_specific", "target_vs_clean_pcc", "registration_error_nm",
    "multimodal_error_nm", "metadata_error_nm",
]
TEXT_COLUMNS = ("section", "split", "registration_status", "channel")
ROUND_COLUMNS = ["section", "round", "method", "status", "accepted", "change_fm_px",
                 "error_nm", "error_fm_px"]


def blurred_em(em_work: np.ndarray, em_scale: int, sigma_target_px: float = 1.0) -> np.ndarray:
    """EM averaged over each target pixel and blurred (σ in target px): a trivial predictor."""
    h, w = em_work.shape[0] // em_scale, em_work.shape[1] // em_scale
    blocks = em_work[: h * em_scale, : w * em_scale].reshape(h, em_scale, w, em_scale)
    return ndimage.gaussian_filter(blocks.mean(axis=(1, 3)), sigma_target_px)


def rms_error_nm(estimate: np.ndarray, truth: np.ndarray, points: np.ndarray,
                 em_pixel_m: float) -> float:
    """RMS distance (nm) between two FM→EM px affines over ``points`` (FM px)."""
    return rms_displacement(estimate, truth, points) * em_pixel_m * 1e9


def match_truth_channel(channel: dict, truth_channels: list[dict], tolerance_nm: float = 20
                        ) -> int | None:
    """Index of the truth channel with the same excitation wavelength, if any."""
    for i, t in enumerate(truth_channels):
        if abs(float(t["excitation_nm"]) - float(channel["excitation_nm"])) <= tolerance_nm:
            return i
    return None


def read_prediction(path: str | Path, tiles_meta: dict) -> np.ndarray:
    """Prediction (C, H, W) from its OME-TIFF; checks it lies on the tiles' target grid."""
    f = read_file(path)
    img = f.images[0]
    assert img.data is not None and img.centre_m is not None and img.pixel_size_m is not None
    if list(img.shape_cyx[1:]) != list(tiles_meta["target_shape"]):
        raise ValueError(f"{path}: prediction grid {img.shape_cyx[1:]} differs from the "
                         f"tiles' {tiles_meta['target_shape']}; rerun predict")
    off = np.hypot(*(np.subtract(img.centre_m, tiles_meta["target_centre_m"])))
    if off > 1e-9 or abs(img.pixel_size_m[0] - tiles_meta["target_pixel_size_m"]) > 1e-12:
        raise ValueError(f"{path}: prediction is placed {off * 1e9:.1f} nm away from the "
                         "tiles' target grid; rerun predict")
    return img.data.astype(np.float32)


def em_sign(train_sections: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per channel ±1: the EM polarity that correlates positively on training sections."""
    n = train_sections[0][1].shape[0]
    vals = []
    for c in range(n):
        a = np.concatenate([b[m] for b, _, m in train_sections])
        t = np.concatenate([fm[c][m] for _, fm, m in train_sections])
        vals.append(1.0 if np.nan_to_num(pcc(a, t)) >= 0 else -1.0)
    return np.array(vals)


def evaluate(sections: list[str], tiles_dir: str | Path, predictions_dir: str | Path,
             ingest_dir: str | Path, registration_dir: str | Path, model_path: str | Path,
             truth_dir: str | Path | None) -> list[dict]:
    """All rows of the metrics table (see module docstring)."""
    import torch

    ckpt = torch.load(model_path, map_location="cpu", weights_only=True)
    train_mean = np.asarray(ckpt["target_mean"], np.float64)
    data = {}
    for s in sections:
        arrays = io.load_npz(Path(tiles_dir) / f"{s}.npz")
        meta = io.read_json(Path(tiles_dir) / f"{s}.json")
        mask = arrays["mask"].astype(bool)
        data[s] = (arrays, meta, mask, blurred_em(arrays["em"], int(meta["em_scale"])))
    train = [(d[3], d[0]["fm"], d[2]) for d in data.values()
             if d[1]["split"] == "train" and d[2].any()]
    sign = em_sign(train) if train else np.ones(len(ckpt["channels"]))
    rows = []
    for s in sections:
        arrays, meta, mask, em_blur = data[s]
        pred = read_prediction(Path(predictions_dir) / f"{s}.ome.tif", meta)
        ingest = io.read_json(Path(ingest_dir) / f"{s}.json")
        reg = io.read_json(Path(registration_dir) / f"{s}.json")
        measured = io.load_npz(Path(ingest_dir) / f"{s}.npz")["fm"] if truth_dir else None
        truth = _truth(s, truth_dir, ingest, measured, reg, meta, mask, arrays)
        for c, ch in enumerate(ingest["fm"]["channels"]):
            t = arrays["fm"][c][mask]
            const = np.full(t.shape, train_mean[c])
            row = {
                "section": s, "split": meta["split"],
                "registration_status": reg.get("status", "ok"), "channel": ch["name"],
                "n_pixels": int(mask.sum()),
                "pcc": pcc(pred[c][mask], t), "r2": r2(pred[c][mask], t),
                "ssim": ssim(pred[c], arrays["fm"][c], mask),
                "nrmse": nrmse(pred[c][mask], t),
                "pcc_baseline_em": pcc(sign[c] * em_blur[mask], t),
                "r2_baseline_mean": r2(const, t), "nrmse_baseline_mean": nrmse(const, t),
            }
            row.update(truth(c, ch, pred[c]) if truth else {})
            rows.append(row)
    return rows


def _truth(section: str, truth_dir: str | Path | None, ingest: dict, measured_fm: np.ndarray,
           reg: dict, meta: dict, mask: np.ndarray, arrays: dict):
    """A function giving the truth-based metrics of one channel, or None without truth."""
    if truth_dir is None or not (Path(truth_dir) / f"{section}.json").exists():
        return None
    tmeta = io.read_json(Path(truth_dir) / f"{section}.json")
    tarr = io.load_npz(Path(truth_dir) / f"{section}.npz")
    true_m = np.asarray(tmeta["fm_to_em_px"])
    em_geom = geometry_from_meta(ingest["em"])
    fm_shape = tuple(ingest["fm"]["shape"][-2:])
    pts = em_field_fm_pixels(fm_shape, true_m, em_geom.shape_yx)
    em_px = float(em_geom.pixel_size_m[0])
    reg_err = rms_error_nm(np.asarray(reg["fm_to_em_px"]), true_m, pts, em_px)
    meta_err = rms_error_nm(np.asarray(reg["fm_to_em_px_metadata"]), true_m, pts, em_px)
    mm_err = rms_error_nm(np.asarray(reg.get("fm_to_em_px_multimodal", reg["fm_to_em_px"])),
                          true_m, pts, em_px)
    target_to_em = np.asarray(meta["target_to_em_px"])
    clean_t = registered_fm(tarr["fm_clean"], true_m, target_to_em, mask.shape)
    spec_t = registered_fm(tarr["fm_specific"], true_m, target_to_em, mask.shape)
    cols = pts[:, 0].astype(int)
    rows_ = pts[:, 1].astype(int)

    def metrics(c: int, ch: dict, pred: np.ndarray) -> dict:
        k = match_truth_channel(ch, tmeta["channels"])
        out = {"registration_error_nm": reg_err, "metadata_error_nm": meta_err,
               "multimodal_error_nm": mm_err}
        if k is None:
            return out
        out["noise_ceiling_pcc"] = pcc(measured_fm[c][rows_, cols],
                                       tarr["fm_clean"][k][rows_, cols])
        out["pcc_vs_clean"] = pcc(pred[mask], clean_t[k][mask])
        out["pcc_vs_specific"] = pcc(pred[mask], spec_t[k][mask])
        out["target_vs_clean_pcc"] = pcc(arrays["fm"][c][mask], clean_t[k][mask])
        return out

    return metrics


def write_tsv(rows: list[dict], path: str | Path, columns: list[str] = COLUMNS) -> None:
    """Write a table of rows (NaN and missing values as empty cells)."""
    lines = ["\t".join(columns)]
    for row in rows:
        cells = []
        for col in columns:
            v = row.get(col)
            if isinstance(v, float):
                cells.append("" if not np.isfinite(v) else f"{v:.4f}")
            else:
                cells.append("" if v is None else str(v))
        lines.append("\t".join(cells))
    io.write_text(path, "\n".join(lines) + "\n")


def read_tsv(path: str | Path) -> list[dict]:
    """Read a metrics table back (numbers as float, empty cells as NaN)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    out = []
    for line in lines[1:]:
        row: dict = {}
        for k, v in zip(header, line.split("\t"), strict=True):
            if k in TEXT_COLUMNS or k in ("method", "status", "accepted"):
                row[k] = v
            else:
                row[k] = float(v) if v else float("nan")
        out.append(row)
    return out


def registration_rounds(sections: list[str], ingest_dir: str | Path,
                        registration_dir: str | Path, truth_dir: str | Path | None
                        ) -> list[dict]:
    """One row per section and registration round: status, change, error against truth.

    ``change_fm_px`` is the RMS change from the previous round (FM px, over the EM field);
    ``error_nm`` / ``error_fm_px`` the RMS error against the true transform (simulation).
    Round ``-1`` is the stage metadata.
    """
    rows = []
    for s in sections:
        reg = io.read_json(Path(registration_dir) / f"{s}.json")
        ingest = io.read_json(Path(ingest_dir) / f"{s}.json")
        em_geom = geometry_from_meta(ingest["em"])
        fm_shape = tuple(ingest["fm"]["shape"][-2:])
        meta_m = np.asarray(reg["fm_to_em_px_metadata"])
        truth_path = Path(truth_dir) / f"{s}.json" if truth_dir else None
        true_m = (np.asarray(io.read_json(truth_path)["fm_to_em_px"])
                  if truth_path is not None and truth_path.exists() else None)
        pts = em_field_fm_pixels(fm_shape, meta_m if true_m is None else true_m,
                                 em_geom.shape_yx)
        fm_px = float(np.sqrt(abs(np.linalg.det(meta_m[:2, :2]))))
        entries = [{"round": -1, "method": "stage metadata", "status": "",
                    "fm_to_em_px": meta_m, "accepted": ""}, *reg.get("rounds", [])]
        previous = None
        for e in entries:
            m = np.asarray(e["fm_to_em_px"])
            row = {"section": s, "round": e["round"], "method": e["method"],
                   "status": e["status"], "accepted": str(e.get("accepted", "")).lower()}
            if previous is not None:
                row["change_fm_px"] = rms_displacement(m, previous, pts) / fm_px
            if true_m is not None:
                err = rms_displacement(m, true_m, pts)
                row["error_nm"] = err * float(em_geom.pixel_size_m[0]) * 1e9
                row["error_fm_px"] = err / fm_px
            rows.append(row)
            previous = m
    return rows


def run(sections: list[str], tiles_npz: list[str], predictions: list[str],
        ingest_json: list[str], registration_json: list[str], model_path: str,
        truth_dir: str | None, tsv_path: str, rounds_path: str) -> None:
    """Evaluate all sections and write the metrics TSV (the rule's entry point).

    The file lists follow the ``results/<stage>/{section}…`` layout; their folders are used.
    """
    def folder(paths: list[str]) -> Path:
        return Path(paths[0]).parent

    rows = evaluate(sections, folder(tiles_npz), folder(predictions), folder(ingest_json),
                    folder(registration_json), model_path, truth_dir)
    write_tsv(rows, tsv_path)
    write_tsv(registration_rounds(sections, folder(ingest_json), folder(registration_json),
                                  truth_dir), rounds_path, ROUND_COLUMNS)
    for r in rows:
        log.info("%s %s %s: PCC %.3f (EM baseline %.3f, noise ceiling %s)", r["section"],
                 r["split"], r["channel"], r["pcc"], r["pcc_baseline_em"],
                 f"{r['noise_ceiling_pcc']:.3f}" if "noise_ceiling_pcc" in r else "n/a")
