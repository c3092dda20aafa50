"""Report parts for what has no measured FM to compare with, and for the model's origin.

- the *predict* sections (EM only): EM, prediction and prediction over EM, with scale bars
  and no PCC;
- the warnings ingest recorded (implausible input that did not stop the run);
- where the model came from (trained here, or given with ``model=PATH``): path, checksum,
  channels, pixel sizes, what it was trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io
from ..lazy import open_array
from ..odemis import read_file
from ..provenance import sha256
from . import figures, tables
from .page import esc, img


def em_only_figure(name: str, em, em_pixel_nm: float, pred: np.ndarray,
                   pred_pixel_nm: float, channels: list[str], max_px: int = 600) -> str:
    """JPEG data URI: per channel, the EM, the prediction and the prediction (green) over it.

    Args:
        name: the section's display name.
        em: the section's EM (Y, X), raw: an array, or a region reader (bounded memory,
            smoothed block by block: :func:`em2fm.geometry.smooth_resample_regions`).
        em_pixel_nm: its pixel size (nm).
        pred: prediction (C, H, W) on the target grid (anchored at the EM's top-left corner).
        pred_pixel_nm: the prediction's pixel size (nm).
        max_px: longest side drawn (target px; the figure is an overview).
    """
    from ..geometry import smooth_resample, smooth_resample_regions

    plt = figures._plt()
    step = max(1, int(np.ceil(max(pred.shape[1:]) / max_px)))
    shown_nm = pred_pixel_nm * step
    if isinstance(em, np.ndarray):
        em_t, _ = smooth_resample(em.astype(np.float32), shown_nm / em_pixel_nm)
    else:
        em_t, _ = smooth_resample_regions(em, shown_nm / em_pixel_nm)
    p_all = pred[:, ::step, ::step]
    h, w = min(em_t.shape[0], p_all.shape[1]), min(em_t.shape[1], p_all.shape[2])
    em_n = figures._norm(em_t[:h, :w])
    fig, axes = plt.subplots(len(channels), 3, figsize=(10.5, 3.6 * len(channels)),
                             squeeze=False)
    for c, ch in enumerate(channels):
        p = figures._norm(p_all[c, :h, :w])
        rgb = np.clip(np.stack([0.55 * em_n, 0.55 * em_n + 0.8 * p, 0.55 * em_n], -1), 0, 1)
        figures._image(axes[c, 0], em_n, f"{name}: EM", shown_nm, cmap="gray")
        figures._image(axes[c, 1], p, f"predicted {ch}", shown_nm, cmap="magma")
        figures._image(axes[c, 2], rgb, f"predicted {ch} (green) over EM", shown_nm)
    fig.tight_layout()
    return figures.data_uri(fig, "jpeg", dpi=80)


def em_only_sections_html(items: list[tuple[str, str | Path, str | Path, str | Path]]) -> str:
    """Report part for the predict sections: ``(section, ingest JSON, ingest npz,
    prediction)`` each; figures without PCC (there is no FM to compare with)."""
    if not items:
        return ""
    parts = ["<h2 id='em-only'>EM-only sections (predicted, not evaluated)</h2>",
             "<p>These sections have the role <em>predict</em>: the network painted "
             "fluorescence onto their EM. There is no measured FM to compare with, so no "
             "PCC: judge them by the test sections above, and only where the tissue looks "
             "like the training sections'. The OME-TIFF predictions overlay the EM by stage "
             "metadata.</p>"]
    for section, ingest_json, ingest_npz, prediction in items:
        meta = io.read_json(ingest_json)
        em = open_array(ingest_npz, "em")  # read region by region: never whole
        pred = read_file(prediction).images[0]
        assert pred.data is not None and pred.pixel_size_m is not None
        name = str(meta.get("name", section))
        pred_nm = float(pred.pixel_size_m[0]) * 1e9
        uri = em_only_figure(name, em, float(meta["em"]["pixel_size_m"][0]) * 1e9, pred.data,
                             pred_nm, [c.name for c in pred.channels])
        parts.append(f"<figure>{img(uri, f'{name} EM-only prediction')}<figcaption>"
                     f"{esc(name)} (EM only): the EM and the prediction (downsampled; "
                     f"{pred_nm:.1f} nm per prediction px) and the prediction (green) over the EM."
                     "</figcaption></figure>")
    return "\n".join(parts)


def ingest_warnings_html(ingests: list[dict]) -> str:
    """Table of the warnings ingest recorded (``warnings`` of each ingest JSON)."""
    rows = [{"section": i.get("name", i["section"]), "role": i.get("role") or "",
             "warning": w} for i in ingests for w in i.get("warnings", [])]
    if not rows:
        return ""
    return ("<h2 id='warnings'>Input warnings</h2><p>Ingest read these sections but found "
            "something to check:</p>" + tables.metrics_table(rows, ["section", "role",
                                                                   "warning"]))


def model_provenance_html(model_path: str | Path, model: dict, card: dict | None) -> str:
    """Where the model came from: path, checksum, what it was trained on.

    ``model`` is the checkpoint's metadata (no weights); ``card`` is
    :func:`em2fm.pretrained.model_card` for a given model (None: trained in this run).
    """
    origin = ("given with <code>model=</code>: not trained in this run" if card
              else "trained in this run")
    px = float(model.get("target_pixel_size_m", float("nan"))) * 1e9
    rows = [
        {"key": "path", "value": str(card["path"] if card else model_path)},
        {"key": "origin", "value": "given (model=PATH)" if card else "trained in this run"},
        {"key": "sha256", "value": card["sha256"] if card else sha256(model_path)},
        {"key": "channels", "value": ", ".join(
            f"{c['name']} (ex {c.get('excitation_nm')} nm)" for c in model.get("channels", []))},
        {"key": "output pixel (nm)", "value": f"{px:.2f}"},
        {"key": "em_scale (EM input px per output px)",
         "value": str(model.get("model", {}).get("em_scale"))},
        {"key": "trained on", "value": ", ".join(model.get("train_sections", [])) or "?"},
        {"key": "validated on", "value": ", ".join(model.get("val_sections", [])) or "none"},
        {"key": "best step", "value": str(model.get("step", "?"))},
        {"key": "validation PCC (mean)",
         "value": tables.cell(float(model.get("val_pcc_mean", float("nan"))))},
    ]
    return (f"<h2 id='model'>Model</h2><p>The model that made every prediction, {origin}. "
            "Every section was predicted on its grid (EM resampled to its input pixel "
            "size).</p>" + tables.metrics_table(rows, ["key", "value"]))
