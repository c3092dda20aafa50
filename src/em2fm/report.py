"""Report: one self-contained HTML file (no external URL) to share a run.

Holds the summary on the test sections (PCC against trivial baselines and the
noise ceiling), the reference figures (prediction vs measured FM; measured
red / predicted green overlaid on the EM; zoomed regions; where the
prediction has low confidence), the full metrics table, the training curve,
the registration QC, the configuration used and the provenance (versions,
inputs with checksums).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import io as _io
import logging
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from . import __version__, io
from .evaluate import read_tsv
from .odemis import read_file

log = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:2em}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.muted{color:#666;font-size:.9em}
figure{margin:1em 0}figcaption{font-size:.9em;color:#444;max-width:1100px}
img{max-width:100%;height:auto}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;
font-size:.8em}.wide{overflow-x:auto}
"""


@dataclass
class SectionView:
    """What the figures of one section need."""

    name: str
    split: str
    em: np.ndarray  # work grid (H·s, W·s), z-scored
    truth: np.ndarray  # (C, H, W) registered measured FM
    pred: np.ndarray  # (C, H, W)
    unc: np.ndarray  # (C, H, W)
    mask: np.ndarray  # (H, W)
    em_scale: int
    pixel_nm: float
    channels: list[str]


def _png(fig) -> str:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _norm(a: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    vals = a[mask] if mask is not None and mask.any() else a.ravel()
    lo, hi = np.percentile(vals, [1, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)


def overlay_rgb(em: np.ndarray, truth: np.ndarray, pred: np.ndarray, mask: np.ndarray,
                em_scale: int) -> np.ndarray:
    """EM in grey with measured FM in red and predicted FM in green (additive)."""
    up = np.ones((em_scale, em_scale))
    t = np.kron(_norm(truth, mask), up)[: em.shape[0], : em.shape[1]]
    p = np.kron(_norm(pred, mask), up)[: em.shape[0], : em.shape[1]]
    m = np.kron(mask.astype(float), up)[: em.shape[0], : em.shape[1]]
    grey = 0.55 * _norm(em)
    rgb = np.stack([grey + 0.8 * t * m, grey + 0.8 * p, grey], axis=-1)
    return np.clip(rgb, 0, 1)


def zoom_regions(view: SectionView, c: int, size_px: int) -> list[tuple[str, int, int]]:
    """Three regions (label, row, col) in target px: agreement, missed signal, low confidence.

    Regions are chosen greedily and do not overlap where the grid leaves room.
    """
    from scipy import ndimage

    h, w = view.mask.shape
    size_px = max(4, min(size_px, h, w))
    t = np.where(view.mask, _norm(view.truth[c], view.mask), 0)
    p = np.where(view.mask, _norm(view.pred[c], view.mask), 0)
    u = np.where(view.mask, view.unc[c], 0)
    scores = {
        "high signal, both": ndimage.uniform_filter(np.minimum(t, p), size_px),
        "measured but not predicted": ndimage.uniform_filter(np.clip(t - p, 0, None), size_px),
        "low confidence (TTA spread)": ndimage.uniform_filter(u, size_px),
    }
    half = size_px // 2
    taken = np.zeros((h, w), bool)  # centres whose window would overlap a chosen one
    out = []
    for label, score in scores.items():
        valid = np.zeros_like(score, dtype=bool)
        valid[half: h - (size_px - half) + 1, half: w - (size_px - half) + 1] = True
        if (valid & ~taken).any():
            valid &= ~taken
        score = np.where(valid, score, -np.inf)
        r, col = np.unravel_index(int(np.argmax(score)), score.shape)
        taken[max(0, r - size_px + 1): r + size_px, max(0, col - size_px + 1): col + size_px] = True
        out.append((label, int(r) - half, int(col) - half))
    return out


def section_figure(view: SectionView, c: int, zoom_um: float) -> str:
    """Reference figure of one channel: prediction, measured, overlay, uncertainty, zooms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    name = view.channels[c]
    size = max(4, round(zoom_um * 1e3 / view.pixel_nm))
    regions = zoom_regions(view, c, size)
    fig = plt.figure(figsize=(13, 7.6), constrained_layout=True)
    gs = fig.add_gridspec(2, 4)
    m = view.mask
    lo, hi = np.percentile(np.concatenate([view.pred[c][m], view.truth[c][m]]), [1, 99.5])
    panels = [
        ("A  prediction", view.pred[c], "magma", (lo, hi), 0),
        ("B  measured (registered)", view.truth[c], "magma", (lo, hi), 1),
        ("D  uncertainty (TTA std)", view.unc[c], "viridis", (None, None), 3),
    ]
    for title, img, cmap, (vmin, vmax), col in panels:
        ax = fig.add_subplot(gs[0, col])
        ax.imshow(np.where(m, img, np.nan), cmap=cmap, vmin=vmin, vmax=vmax,
                  interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    ax = fig.add_subplot(gs[0, 2])
    rgb = overlay_rgb(view.em, view.truth[c], view.pred[c], view.mask, view.em_scale)
    ax.imshow(rgb, interpolation="nearest")
    s = view.em_scale
    for k, (_, r, col) in enumerate(regions):
        ax.add_patch(Rectangle((col * s, r * s), size * s, size * s, fill=False,
                               edgecolor="white", lw=1.2))
        ax.text(col * s, r * s - 4, "EFG"[k], color="white", fontsize=9)
    ax.set_title("C  measured (red) / predicted (green) on EM", fontsize=10)
    ax.set_axis_off()
    for k, (label, r, col) in enumerate(regions):
        ax = fig.add_subplot(gs[1, k])
        crop = rgb[r * s: (r + size) * s, col * s: (col + size) * s]
        ax.imshow(crop, interpolation="nearest")
        ax.set_title(f"{'EFG'[k]}  {label}", fontsize=10)
        ax.set_axis_off()
    ax = fig.add_subplot(gs[1, 3])
    ax.hexbin(view.truth[c][m], view.pred[c][m], gridsize=40, bins="log", cmap="Greys")
    ax.set_xlabel("measured (ADU)")
    ax.set_ylabel("predicted (ADU)")
    ax.set_title("H  predicted vs measured, per pixel", fontsize=10)
    fig.suptitle(f"{view.name} ({view.split}) — {name}; zooms {zoom_um:g} µm", fontsize=12)
    return _png(fig)


def training_figure(tsv: str | Path) -> str:
    """Training loss and validation PCC per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = Path(tsv).read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, ln.split("\t"), strict=True)) for ln in lines[1:]]
    step = np.array([float(r["step"]) for r in rows])
    loss = np.array([float(r["train_loss"]) for r in rows])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
    k = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    a.plot(step, loss, color="#bbb", lw=0.6, label="per step")
    a.plot(step[k - 1:], smooth, color="k", lw=1.2, label=f"mean of {k}")
    val = [(float(r["step"]), float(r["val_loss"])) for r in rows if r.get("val_loss")]
    if val:
        a.plot(*zip(*val, strict=True), "o-", color="tab:blue", label="validation")
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_ylabel("MSE (normalised)")
    a.legend(fontsize=8)
    for col in (h for h in header if h.startswith("val_pcc_")):
        pts = [(float(r["step"]), float(r[col])) for r in rows if r.get(col)]
        if pts:
            b.plot(*zip(*pts, strict=True), "o-", label=col.removeprefix("val_pcc_"))
    b.set_xlabel("step")
    b.set_ylabel("validation PCC")
    b.legend(fontsize=8)
    return _png(fig)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "–" if not np.isfinite(v) else f"{v:.3f}"
    return html.escape(str(v))


def metrics_table(rows: list[dict], columns: list[str]) -> str:
    """HTML table of metric rows."""
    head = "".join(f'<th class="{"l" if c in ("section", "split", "channel") else ""}">'
                   f"{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if c in ("section", "split", "channel") else ""}">'
                         f"{_fmt(r.get(c, float('nan')))}</td>" for c in columns) + "</tr>"
        for r in rows)
    return f'<div class="wide"><table><tr>{head}</tr>{body}</table></div>'


def summary_rows(rows: list[dict], split: str = "test",
                 statuses: tuple[str, ...] = ("ok",)) -> list[dict]:
    """Mean of each metric per channel over the sections of ``split``.

    Only sections whose registration status is in ``statuses`` count: a PCC against a
    misregistered FM measures the registration, not the network.
    """
    out = []
    for ch in dict.fromkeys(r["channel"] for r in rows):
        sel = [r for r in rows if r["channel"] == ch and r["split"] == split
               and r.get("registration_status", "ok") in statuses]
        if not sel:
            continue
        agg: dict = {"channel": ch, "sections": len(sel)}
        for key in ("pcc", "pcc_baseline_em", "r2", "r2_baseline_mean", "noise_ceiling_pcc",
                    "pcc_vs_clean", "pcc_vs_specific", "target_vs_clean_pcc",
                    "registration_error_nm", "multimodal_error_nm", "metadata_error_nm"):
            vals = [float(r.get(key, float("nan"))) for r in sel]
            agg[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        out.append(agg)
    return out


def versions() -> dict[str, str]:
    """Versions of the software that produced the results."""
    import importlib.metadata as md

    out = {"em2fm": __version__, "python": platform.python_version(),
           "platform": platform.platform()}
    for pkg in ("snakemake", "torch", "numpy", "scipy", "SimpleITK", "tifffile", "imagecodecs",
                "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        out["git commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["git commit"] = "unknown (not a git checkout)"
    return out


def sha256(path: str | Path) -> str:
    """SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_view(section: str, tiles_npz: str | Path, prediction: str | Path,
              uncertainty: str | Path) -> SectionView:
    """Arrays of one section for the figures."""
    arrays = io.load_npz(tiles_npz)
    meta = io.read_json(Path(tiles_npz).with_suffix(".json"))
    pred = read_file(prediction).images[0]
    unc = read_file(uncertainty).images[0]
    assert pred.data is not None and unc.data is not None
    return SectionView(section, meta["split"], arrays["em"], arrays["fm"], pred.data,
                       unc.data, arrays["mask"].astype(bool), int(meta["em_scale"]),
                       float(meta["target_pixel_size_m"]) * 1e9, meta["channels"])


def flagged_sections(registrations: list[dict]) -> list[dict]:
    """Sections whose registration is not ``ok``, with the reasons."""
    return [{"section": r["section"], "status": r["status"],
             "used for training": "yes" if r.get("use_for_training") else "no",
             "reasons": "; ".join(r.get("reasons", []))}
            for r in registrations if r.get("status", "ok") != "ok"]


def registration_rows(registrations: list[dict]) -> list[dict]:
    """One row per section: status, final correction, and the evidence in brief."""
    out = []
    for r in registrations:
        corr = r["correction"]
        first = r["rounds"][0] if r.get("rounds") else {}
        out.append({
            "section": r["section"], "status": r["status"], "channel": r["channel"],
            "rounds": len(r.get("rounds", [])),
            "shift x (nm)": corr["shift_nm"][0], "shift y (nm)": corr["shift_nm"][1],
            "rotation (°)": corr["rotation_deg"], "scale error (%)": 100 * corr["scale_error"],
            "multimodal status": first.get("status", r["status"]),
            "multimodal second peak ratio": first.get("second_peak_ratio", float("nan")),
            "agreement (FM px)": r.get("evidence", {}).get(
                "agreement_with_multimodal_fm_px", float("nan")),
            "reasons": "; ".join(r.get("reasons", [])) or "none"})
    return out


def build_html(*, metrics: list[dict], training_tsv: str | Path | None,
               views: list[SectionView],
               registrations: list[dict], overlays: dict[str, str | Path],
               rounds: list[dict],
               ingests: list[dict], config: dict, simulated: bool, zoom_um: float,
               model: dict, em_only_html: str = "", model_html: str = "") -> str:
    """The whole report as one HTML string.

    ``em_only_html`` (:func:`em_only_sections_html`) and ``model_html``
    (:func:`model_provenance_html`) are inserted as given; without ``training_tsv`` (a
    given model) the training section is left out.
    """
    from .evaluate import COLUMNS

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary = summary_rows(metrics)
    flagged = flagged_sections(registrations)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>em2fm report</title>", f"<style>{CSS}</style></head><body>",
        "<h1>em2fm: fluorescence predicted from electron microscopy</h1>",
        f"<p class='muted'>Generated {now} by em2fm {__version__}. Data: "
        + ("the embedded simulated dataset (ground truth known)" if simulated
           else f"Odemis exports in <code>{html.escape(str(config.get('raw_dir')))}</code>")
        + f". {len(views)} sections: "
        + ", ".join(f"{v.name} ({v.split})" for v in views) + ".</p>",
        "<h2>Summary on the test sections</h2>",
        "<p>Pearson correlation (PCC) of the prediction with the measured, registered FM "
        "inside the area both modalities cover. <em>pcc_baseline_em</em>: the EM blurred to "
        "FM resolution, with the polarity that fits the training sections best; "
        "<em>r2_baseline_mean</em>: the constant training mean (its PCC is undefined). "
        "<em>noise_ceiling_pcc</em>: the measured FM against its noise-free version "
        "(simulation only), the best any prediction can reach on average.</p>",
        metrics_table(summary, ["channel", "sections", "pcc", "pcc_baseline_em",
                                "noise_ceiling_pcc", "pcc_vs_clean", "registration_error_nm",
                                "metadata_error_nm"]),
        ("<p><strong>Registration flags.</strong> Only sections whose registration is "
         "<em>ok</em> count in this summary; these did not, and are flagged in every table "
         "below (their PCC compares the prediction with an FM that may be misplaced):</p>"
         + metrics_table(flagged, ["section", "status", "used for training", "reasons"])
         if flagged else "<p>Every section's registration passed its checks "
         "(status <em>ok</em>).</p>"),
        "<p class='muted'>All columns, per section, are in the table <em>All sections</em> "
        "below.</p>",
    ]
    parts.append("<h2>Prediction vs measured fluorescence</h2>")
    shown = [v for v in views if v.split == "test"] or views[:1]
    for v in shown:
        for c, ch in enumerate(v.channels):
            parts.append(
                f"<figure>{_img(section_figure(v, c, zoom_um), f'{v.name} {ch}')}"
                f"<figcaption>{html.escape(v.name)}, {html.escape(ch)}: (A) network prediction "
                "and (B) measured fluorescence after registration, on the same grid and scale; "
                "(C) measured (red) and predicted (green) fluorescence over the EM (yellow "
                "where both agree); (D) the spread of the 8 test-time flips/rotations, high "
                "where the prediction has low confidence; (E–G) zoomed regions picked "
                "automatically: strongest shared signal, measured signal the network did not "
                "predict (aspecific labelling or bleed-through typically), lowest confidence; "
                "(H) pixel-wise agreement.</figcaption></figure>")
    parts.append(em_only_html)
    parts.append(ingest_warnings_html(ingests))
    parts.append("<h2>All sections</h2>")
    parts.append(metrics_table(metrics, COLUMNS))
    parts.append(model_html)
    if training_tsv is None:
        parts.append(_after_training(registrations, rounds, overlays, config, ingests))
        parts.append("</body></html>")
        return "\n".join(parts)
    parts.append("<h2>Training</h2>")
    parts.append(
        f"<p>Best checkpoint at step {model.get('step')} (mean validation PCC "
        f"{float(model.get('val_pcc_mean', float('nan'))):.3f}); training sections "
        f"{', '.join(model.get('train_sections', []))}, validation "
        f"{', '.join(model.get('val_sections', []))}.</p>")
    parts.append(f"<figure>{_img(training_figure(training_tsv), 'training curve')}"
                 "<figcaption>Training loss per step (grey; black: running mean) and, at each "
                 "validation step, the loss and PCC on the validation sections. The loss is "
                 "the mean squared error of FM normalised with the training statistics, so it "
                 "also counts section-to-section brightness differences (staining, lamp) that "
                 "no EM-based prediction can know; the PCC ignores them.</figcaption>"
                 "</figure>")
    parts.append(_after_training(registrations, rounds, overlays, config, ingests))
    parts.append("</body></html>")
    return "\n".join(parts)


def _after_training(registrations: list[dict], rounds: list[dict],
                    overlays: dict[str, str | Path], config: dict, ingests: list[dict]) -> str:
    """Registration, configuration and provenance parts of the report."""
    parts = []
    parts.append(
        "<h2>Registration</h2><p>Correction on top of the stage metadata (shift in the stage "
        "frame, x right, y up; rotation counter-clockwise; scale error of the FM pixel size). "
        "Round 0 searches the whole capture range exhaustively, then refines locally, "
        "maximising a multimodal metric between one FM channel and the EM; the following "
        "rounds register the measured FM to the prediction of a model trained on the "
        "previous round's registrations. Status: <em>ok</em> (every check passed), "
        "<em>low_confidence</em> (a rival optimum nearly as good, or methods that disagree), "
        "<em>failed</em> (an optimum on the capture range's bound or no better than the "
        "metadata: the stage metadata is used instead).</p>")
    reg_rows = registration_rows(registrations)
    parts.append(metrics_table(reg_rows, list(reg_rows[0]) if reg_rows else []))
    if rounds:
        parts.append("<p>Every round (−1: stage metadata; <em>change</em>: RMS change from "
                     "the previous round; <em>error</em>: against the true transform, where "
                     "known):</p>")
        parts.append(metrics_table(rounds, list(rounds[0])))
    for name, png in overlays.items():
        b64 = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        parts.append(f"<figure>{_img(b64, f'registration {name}')}<figcaption>"
                     f"{html.escape(name)}: EM (magenta) and FM (green), placed by stage "
                     "metadata, by the multimodal search and after the last round.</figcaption>"
                     "</figure>")
    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>")
    parts.append("<h2>Provenance</h2>")
    parts.append(metrics_table([{"software": k, "version": v} for k, v in versions().items()],
                               ["software", "version"]))
    files = []
    for ing in ingests:
        for f in ing["files"]:
            p = Path(f)
            files.append({"section": ing["section"], "file": p.name,
                          "bytes": p.stat().st_size if p.exists() else "missing",
                          "sha256": sha256(p) if p.exists() else "",
                          "variant": ing["variant"], "dialect": ing["dialect"]})
    parts.append("<p>Input exports:</p>")
    parts.append(metrics_table(files, ["section", "file", "variant", "dialect", "bytes",
                                       "sha256"]))
    return "\n".join(parts)


def run(metrics_tsv: str | None, training_tsv: str | None, model_path: str,
        tiles_npz: list[str], predictions: list[str], uncertainties: list[str],
        ingest_json: list[str], registration_json: list[str], overlays: list[str],
        rounds_tsv: str | None, sections: list[str],
        config: dict, simulated: bool, zoom_size_um: float, html_path: str,
        fm_sections: list[str] | None = None, em_only: list[str] | None = None,
        em_only_npz: list[str] | None = None, model_card: dict | None = None) -> None:
    """Build the report from the rule's inputs and write it.

    ``sections`` are all sections (``predictions``, ``ingest_json`` follow them);
    ``fm_sections`` those with FM (``tiles_npz``, ``registration_json``, ``overlays``),
    ``em_only`` the predict sections (``em_only_npz``: their ingest npz). Without
    ``metrics_tsv`` (no section with FM) or ``training_tsv`` (a given model) those parts
    are left out; ``model_card`` describes a given model.
    """
    import torch

    fm_sections = list(sections if fm_sections is None else fm_sections)
    em_only = list(em_only or [])
    ckpt = torch.load(model_path, map_location="cpu", weights_only=True)
    model = {k: v for k, v in ckpt.items() if k != "state_dict"}
    pred_of = dict(zip(sections, predictions, strict=True))
    unc_of = dict(zip(sections, uncertainties, strict=True))
    ingest_of = dict(zip(sections, ingest_json, strict=True))
    views = [load_view(s, t, pred_of[s], unc_of[s]) for s, t in
             zip(fm_sections, tiles_npz, strict=True)]
    em_only_html = em_only_sections_html(
        [(s, ingest_of[s], n, pred_of[s]) for s, n in
         zip(em_only, em_only_npz or [], strict=True)])
    text = build_html(
        metrics=read_tsv(metrics_tsv) if metrics_tsv else [], training_tsv=training_tsv,
        views=views,
        registrations=[io.read_json(p) for p in registration_json],
        overlays=dict(zip(fm_sections, overlays, strict=True)),
        rounds=([{**r, "round": int(r["round"])} for r in read_tsv(rounds_tsv)]
                if rounds_tsv else []),
        ingests=[io.read_json(p) for p in ingest_json], config=config, simulated=simulated,
        zoom_um=zoom_size_um, model=model, em_only_html=em_only_html,
        model_html=model_provenance_html(model_path, model, model_card),
    )
    io.write_text(html_path, text)
    log.info("report: %d sections, %.1f MB", len(views), len(text) / 1e6)


# --------------------------------------------------------------------------------------------
# EM-only sections, ingest warnings and model provenance (self-contained; build_html inserts
# their HTML as given).


def em_only_figure(name: str, em: np.ndarray, em_pixel_m: float, pred: np.ndarray,
                   pred_pixel_m: float, channels: list[str]) -> str:
    """PNG (base64): per channel, the EM, the prediction and the prediction over the EM.

    Args:
        em: the section's EM (Y, X), raw.
        em_pixel_m: its pixel size (m).
        pred: prediction (C, H, W) on the target grid (anchored at the EM's top-left corner).
        pred_pixel_m: the prediction's pixel size (m).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .geometry import smooth_resample

    em_t, _ = smooth_resample(em.astype(np.float32), pred_pixel_m / em_pixel_m)
    h, w = min(em_t.shape[0], pred.shape[1]), min(em_t.shape[1], pred.shape[2])
    em_n = _norm(em_t[:h, :w])
    fig, axes = plt.subplots(len(channels), 3, figsize=(10.5, 3.6 * len(channels)),
                             squeeze=False)
    for c, ch in enumerate(channels):
        p = _norm(pred[c, :h, :w])
        rgb = np.stack([0.6 * em_n, 0.6 * em_n + 0.4 * p, 0.6 * em_n], axis=-1)
        for ax, img, title in ((axes[c, 0], em_n, f"{name}: EM"),
                               (axes[c, 1], p, f"predicted {ch}"),
                               (axes[c, 2], np.clip(rgb, 0, 1), f"predicted {ch} over EM")):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    fig.tight_layout()
    return _png(fig)


def em_only_sections_html(items: list[tuple[str, str | Path, str | Path, str | Path]]) -> str:
    """Report part for the predict sections: ``(section, ingest JSON, ingest npz,
    prediction)`` each; figures without PCC (there is no FM to compare with)."""
    if not items:
        return ""
    parts = ["<h2>EM-only sections (predicted, not evaluated)</h2>",
             "<p>These sections have the role <em>predict</em>: the network painted "
             "fluorescence onto their EM; there is no measured FM to compare with, so no "
             "PCC. The OME-TIFF predictions overlay the EM by stage metadata.</p>"]
    for section, ingest_json, ingest_npz, prediction in items:
        meta = io.read_json(ingest_json)
        em = io.load_npz(ingest_npz)["em"]
        img = read_file(prediction).images[0]
        assert img.data is not None and img.pixel_size_m is not None
        channels = [c.name for c in img.channels]
        b64 = em_only_figure(meta.get("name", section), em, float(meta["em"]["pixel_size_m"][0]),
                             img.data, float(img.pixel_size_m[0]), channels)
        label = html.escape(str(meta.get("name", section)))
        parts.append(f"<figure>{_img(b64, f'{section} EM-only prediction')}<figcaption>"
                     f"{label} (EM only): the EM at the prediction's pixel size "
                     f"({img.pixel_size_m[0] * 1e9:.1f} nm), the prediction, and the "
                     "prediction (green) over the EM.</figcaption></figure>")
    return "\n".join(parts)


def ingest_warnings_html(ingests: list[dict]) -> str:
    """Table of the warnings ingest recorded (``warnings`` of each ingest JSON)."""
    rows = [{"section": i.get("name", i["section"]), "role": i.get("role") or "",
             "warning": w} for i in ingests for w in i.get("warnings", [])]
    if not rows:
        return ""
    return ("<h2>Input warnings</h2><p>Ingest read these sections but found something to "
            "check:</p>" + metrics_table(rows, ["section", "role", "warning"]))


def model_provenance_html(model_path: str | Path, model: dict, card: dict | None) -> str:
    """Where the model came from: path, checksum, what it was trained on.

    ``model`` is the checkpoint's metadata (no weights); ``card`` is
    :func:`em2fm.pretrained.model_card` for a given model (None: trained in this run).
    """
    sha = card["sha256"] if card else sha256(model_path)
    origin = ("given with <code>model=</code>: not trained in this run" if card
              else "trained in this run")
    rows = [
        {"key": "path", "value": str(card["path"] if card else model_path)},
        {"key": "origin", "value": "given (model=PATH)" if card else "trained in this run"},
        {"key": "sha256", "value": sha},
        {"key": "channels", "value": ", ".join(
            f"{c['name']} (ex {c.get('excitation_nm')} nm)" for c in model.get("channels", []))},
        {"key": "target pixel (nm)",
         "value": f"{float(model.get('target_pixel_size_m', float('nan'))) * 1e9:.2f}"},
        {"key": "em_scale", "value": str(model.get("model", {}).get("em_scale"))},
        {"key": "trained on", "value": ", ".join(model.get("train_sections", [])) or "?"},
        {"key": "validated on", "value": ", ".join(model.get("val_sections", [])) or "?"},
        {"key": "best step", "value": str(model.get("step", "?"))},
        {"key": "validation PCC (mean)",
         "value": f"{float(model.get('val_pcc_mean', float('nan'))):.3f}"},
    ]
    body = "".join(f"<tr><td class='l'>{html.escape(r['key'])}</td>"
                   f"<td class='l'>{html.escape(r['value'])}</td></tr>" for r in rows)
    return (f"<h2>Model</h2><p>The model that made every prediction, {origin}. Every "
            "section was predicted on its grid (EM resampled to its input pixel size).</p>"
            f"<div class='wide'><table>{body}</table></div>")
