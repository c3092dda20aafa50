"""The report page: one self-contained HTML string (inline images, no script, no URL)."""

from __future__ import annotations

import datetime as dt
import html
import os
import platform
from pathlib import Path

import numpy as np
import yaml

from .. import __version__, provenance
from . import figures, tables

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:2em}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}caption{text-align:left;
font-size:.95em;color:#444;padding:.2em 0}th{background:#f3f3f3}td.l,th.l{text-align:left}
.muted{color:#666;font-size:.9em}figure{margin:1em 0}figcaption{font-size:.9em;color:#444;
max-width:1100px}img{max-width:100%;height:auto}pre{background:#f7f7f7;padding:.8em;
overflow-x:auto;font-size:.8em}.wide{overflow-x:auto}.key{background:#f4f8ff;
border-left:4px solid #4a7bd0;padding:.6em 1em}nav a{margin-right:1em}
"""

WHERE = [("summary", "How good is it"), ("fails", "Where it fails"),
         ("figures", "Test sections"), ("all", "All sections"), ("training", "Training"),
         ("registration", "Registration"), ("config", "Configuration"),
         ("provenance", "Provenance")]


def device() -> dict[str, str]:
    """The machine the report was built on (the jobs of a cluster run may differ)."""
    out = {"platform": platform.platform(), "machine": platform.machine(),
           "CPUs": str(os.cpu_count())}
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
        out["memory"] = f"{kb / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import torch

        out["CUDA"] = (", ".join(torch.cuda.get_device_name(i)
                                 for i in range(torch.cuda.device_count()))
                       if torch.cuda.is_available() else "none")
    except ImportError:  # pragma: no cover - torch is in the report environment
        out["CUDA"] = "unknown (torch not installed)"
    return out


def esc(s: object) -> str:
    """HTML-escaped text (quotes too: safe in attributes)."""
    return html.escape(str(s), quote=True)


def img(uri: str, alt: str) -> str:
    """An inline image."""
    return f'<img alt="{esc(alt)}" src="{uri}">'


def full_figure_views(views: list[figures.SectionView], metrics: list[dict],
                      limit: int) -> list[figures.SectionView]:
    """The sections drawn in full: the test sections (all, or the worst, best and evenly
    spaced ones between by mean PCC when there are more than ``limit``); without test
    sections, the first section."""
    test = [v for v in views if v.split == "test"] or views[:1]
    if len(test) <= limit:
        return test

    def score(v: figures.SectionView) -> float:
        vals = [float(r["pcc"]) for r in metrics if r["section"] == v.name]
        vals = [x for x in vals if np.isfinite(x)]
        return float(np.mean(vals)) if vals else np.inf

    ranked = sorted(test, key=score)
    picks = sorted({round(i) for i in np.linspace(0, len(ranked) - 1, limit)})
    return [ranked[i] for i in picks]


def _what_was_done(config: dict, views: list[figures.SectionView], simulated: bool,
                   model: dict, em_only: list[str] = (), model_given: bool = False) -> str:
    by_split: dict[str, list[str]] = {}
    for v in views:
        by_split.setdefault(v.split, []).append(v.name)
    if em_only:
        by_split["predict (EM only)"] = list(em_only)
    splits = "; ".join(f"{esc(k)}: {esc(', '.join(n))}" for k, n in by_split.items())
    channels = ", ".join(esc(c) for c in (views[0].channels if views else []))
    data = ("simulated serial sections with known ground truth (the embedded default "
            "dataset)" if simulated else
            f"Odemis exports read from <code>{esc(config.get('raw_dir'))}</code>")
    tta = config.get("predict", {}).get("test_time_augmentation", True)
    return (
        "<div class='key'><p><strong>What was done.</strong> A convolutional network (U-Net) "
        "learned to predict fluorescence (FM) from electron microscopy (EM) of the same "
        f"sections, acquired together in an integrated CLEM microscope. Data: {data}. "
        f"Channels predicted: {channels}. Each section's FM was first aligned to its EM "
        "(stage metadata, then a multimodal search, then rounds that align the FM to a "
        "preliminary prediction); "
        + ("a network trained in another run (see <a href='#model'>Model</a>) "
           if model_given else
           "the network was trained on the training sections (best checkpoint chosen on "
           f"the validation sections: step {esc(model.get('step'))}), then ")
        + "predicted every section from its EM alone"
        + (", averaging 8 flips/rotations whose spread is shown as the confidence map" if tta
           else "")
        + f". Sections by role — {splits}. The test sections were never seen in training "
        "or model selection: the numbers on them are the honest estimate of performance."
        "</p></div>")


def _verdict(summary: list[dict]) -> str:
    test = [r for r in summary if r["split"] == "test"]
    if not test:
        return ("<p><strong>No test section has a measured FM with an <em>ok</em> "
                "registration: this run gives no honest estimate of performance.</strong></p>")
    items = []
    for r in test:
        n = r["sections"]
        ceiling = r.get("noise_ceiling_pcc", float("nan"))
        extra = (f"; the noise ceiling (measured vs noise-free FM) is {ceiling:.3f}, so the "
                 f"prediction reaches {r['pcc'] / ceiling:.0%} of what the noise allows"
                 if np.isfinite(ceiling) and ceiling > 0 else "")
        ci = (f"95 % CI {esc(r['pcc 95% CI'])} over {n} test sections" if n > 1 else
              "one test section, so no confidence interval: treat it as an anecdote")
        items.append(
            f"<li><strong>{esc(r['channel'])}</strong>: PCC {r['pcc']:.3f} ({ci}), against "
            f"{tables.cell(r['pcc_baseline_em'])} for the blurred-EM baseline{extra}; SSIM "
            f"{tables.cell(r['ssim'])}, NRMSE {tables.cell(r['nrmse'])} (constant training "
            f"mean: {tables.cell(r['nrmse_baseline_mean'])}).</li>")
    return ("<p><strong>How good is it, in one look</strong> (test sections; PCC 1 is a "
            "perfect pattern, 0 none; CI: 95 % bootstrap interval over sections):</p><ul>"
            + "".join(items) + "</ul>")


def build_html(*, metrics: list[dict], training_tsv: str | Path | None,
               views: list[figures.SectionView], registrations: list[dict],
               overlays: dict[str, str | Path], rounds: list[dict], ingests: list[dict],
               config: dict, simulated: bool, zoom_um: float, model: dict,
               local_pcc_um: float = 3.0, max_section_figures: int = 4,
               benchmarks: list[str | Path] = (), benchmark_root: str | Path =
               "results/benchmarks", repo: str | Path | None = None,
               em_only: list[str] = (), em_only_html: str = "", warnings_html: str = "",
               model_html: str = "", model_given: bool = False) -> str:
    """The whole report as one HTML string.

    ``em_only`` names the predict sections (EM only), drawn by ``em_only_html``;
    ``warnings_html`` and ``model_html`` (where the model came from) are inserted as
    given. Without ``training_tsv`` (``model_given``: a model of another run) the training
    curve is left out.
    """
    from ..evaluate import COLUMNS

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary = tables.split_summary(metrics)
    flagged = tables.flagged_sections(registrations)
    channels = list(dict.fromkeys(c for v in views for c in v.channels))
    scores = {(r["section"], r["channel"]): float(r["pcc"]) for r in metrics}
    p: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width'>",
        "<title>em2fm report</title>", f"<style>{CSS}</style></head><body>",
        "<h1>em2fm: fluorescence predicted from electron microscopy</h1>",
        f"<p class='muted'>Generated {now} by em2fm {esc(__version__)}.</p>",
        "<nav>" + "".join(f"<a href='#{k}'>{esc(t)}</a>" for k, t in WHERE) + "</nav>",
        _what_was_done(config, views, simulated, model, list(em_only), model_given),
        "<h2 id='summary'>How good is it</h2>", _verdict(summary),
        "<p>Per split and channel, the mean over sections. <em>pcc</em>: Pearson correlation "
        "of prediction and measured, registered FM inside the area both modalities cover "
        "(1: same pattern; insensitive to brightness and offset). <em>ssim</em>: structural "
        "similarity (1: identical). <em>nrmse</em>: RMS error over the measured FM's range "
        "(0: identical; depends on brightness, unlike PCC). Baselines: "
        "<em>pcc_baseline_em</em>, the EM blurred to FM resolution; "
        "<em>nrmse_baseline_mean</em> and <em>r2_baseline_mean</em>, the constant training "
        "mean. <em>noise_ceiling_pcc</em>: measured vs noise-free FM (simulation only), "
        "the best any prediction can reach on average. 95 % CI: percentile bootstrap over "
        "sections (none with fewer than two sections).</p>",
        tables.metrics_table(summary, [
            "split", "channel", "sections", "pcc", "pcc 95% CI", "pcc_baseline_em", "ssim",
            "ssim 95% CI", "nrmse", "nrmse 95% CI", "nrmse_baseline_mean", "r2_baseline_mean",
            "noise_ceiling_pcc", "pcc_vs_clean", "registration_error_nm"]),
        ("<p><strong>Registration flags.</strong> Only sections whose registration is "
         "<em>ok</em> count in this summary; these did not, and are flagged in every table "
         "below (their PCC compares the prediction with an FM that may be misplaced):</p>"
         + tables.metrics_table(flagged, ["section", "status", "used for training", "reasons"])
         if flagged else "<p>Every section's registration passed its checks "
         "(status <em>ok</em>).</p>"),
    ]
    hist = figures.histogram_figure([v for v in views if v.split == "test"], channels)
    if hist:
        p.append(f"<figure>{img(hist, 'histograms')}<figcaption>Predicted against measured FM, "
                 "pixel by pixel, over the test sections (log counts; red: identity). A cloud "
                 "along the identity line is a good prediction; a flat cloud, a missed "
                 "signal.</figcaption></figure>")
    # where it fails
    shown = full_figure_views(views, metrics, max_section_figures)
    p.append("<h2 id='fails'>Where it fails</h2>")
    worst = tables.worst_rows(metrics)
    p.append("<p>The section × channel pairs of lowest PCC (test sections first):</p>")
    p.append(tables.metrics_table(worst, ["section", "split", "registration_status",
                                          "channel", "pcc", "ssim", "nrmse",
                                          "pcc_baseline_em"]))
    p.append(f"<p>Within each section shown below, the map <em>local PCC</em> gives the "
             f"correlation in windows of {local_pcc_um:g} µm (red: the prediction follows the "
             "measured pattern; blue: it misses or misplaces it; white: no agreement, "
             "or no measured signal there to predict), and the zooms E (best) and F (worst "
             "local PCC among the windows with measured structure) and G (least confident "
             "prediction) show the regions at full resolution. The low-confidence map is the "
             "spread of the test-time flips/rotations: where it is high, do not trust the "
             "prediction.</p>")
    # figures of test sections
    p.append("<h2 id='figures'>Test sections</h2>")
    if len(shown) < len([v for v in views if v.split == "test"]):
        p.append(f"<p class='muted'>{len(shown)} of the test sections are drawn in full (worst, "
                 "best and in between by PCC); every section is in the thumbnails below.</p>")
    zoom_rows: list[dict] = []
    for v in shown:
        zoom_px = max(4, round(zoom_um * 1e3 / v.pixel_nm))
        window_px = max(3, round(local_pcc_um * 1e3 / v.pixel_nm))
        regions = {c: figures.zoom_regions(v, c, zoom_px) for c in range(len(v.channels))}
        over = figures.section_overview(v, regions, zoom_px, window_px)
        zooms, info = figures.section_zooms(v, regions, zoom_px)
        zoom_rows += [{"section": v.name, **i} for i in info]
        p.append(f"<h3>{esc(v.name)} ({esc(v.split)})</h3>")
        p.append(f"<figure>{img(over, f'{v.name} overview')}<figcaption>{esc(v.name)}, one row "
                 "per channel, downsampled: EM; measured FM after registration; predicted FM "
                 "(same colour scale); measured (red) and predicted (green) FM over the EM, "
                 "yellow where both agree; local PCC; low confidence (spread of the 8 test-"
                 "time flips/rotations, ADU). Boxes: the zooms below (letter, channel number)."
                 " Scale bars in each panel.</figcaption></figure>")
        p.append(f"<figure>{img(zooms, f'{v.name} zooms')}<figcaption>{esc(v.name)}, zooms of "
                 f"{zoom_um:g} µm at the EM's full resolution: EM, measured, predicted, "
                 "overlay; the PCC inside each box is in the overlay's title.</figcaption>"
                 "</figure>")
    if zoom_rows:
        p.append(tables.metrics_table(zoom_rows, ["section", "tag", "channel", "region", "pcc"],
                                      "Zoom regions, chosen automatically"))
    # all sections
    p.append(em_only_html)
    p.append(warnings_html)
    p.append("<h2 id='all'>All sections</h2>")
    if views:
        p.append(f"<figure>{img(figures.thumbnails_figure(views, scores), 'thumbnails')}"
                 "<figcaption>Every section and channel, small: measured (red) and predicted "
                 "(green) FM over the EM, with the section's PCC (none without measured FM)."
                 "</figcaption></figure>")
    p.append(tables.metrics_table(metrics, COLUMNS))
    # training
    p.append("<h2 id='training'>Training</h2>")
    p.append(
        f"<p>Best checkpoint at step {esc(model.get('step'))} (mean validation PCC "
        f"{tables.cell(float(model.get('val_pcc_mean', float('nan'))))}); training sections "
        f"{esc(', '.join(model.get('train_sections', [])))}, validation "
        f"{esc(', '.join(model.get('val_sections', [])))}.</p>")
    for warning in model.get("warnings", []):
        p.append(f"<p><strong>Warning:</strong> {esc(warning)}</p>")
    if training_tsv is not None:
        p.append(f"<figure>{img(figures.training_figure(training_tsv), 'training curve')}"
                 "<figcaption>Training loss per step (grey; black: running mean) and, at "
                 "each validation step, the loss and PCC on the validation sections. The loss "
                 "is the mean squared error of FM normalised with the training statistics, so "
                 "it also counts section-to-section brightness differences (staining, lamp) "
                 "that no EM-based prediction can know; the PCC ignores them.</figcaption>"
                 "</figure>")
    else:
        p.append("<p>The model was trained in another run: no training curve here.</p>")
    p.append(model_html)
    # registration
    p.append(
        "<h2 id='registration'>Registration</h2><p>Correction on top of the stage metadata "
        "(shift in the stage frame, x right, y up; rotation counter-clockwise; scale error of "
        "the FM pixel size). Round 0 searches the whole capture range exhaustively, then "
        "refines locally, maximising a multimodal metric between one FM channel and the EM; "
        "the following rounds register the measured FM to the prediction of a model trained "
        "on the previous round's registrations. Status: <em>ok</em> (every check passed), "
        "<em>low_confidence</em> (a rival optimum nearly as good, or methods that disagree), "
        "<em>failed</em> (an optimum on the capture range's bound or no better than the "
        "metadata: the stage metadata is used instead).</p>")
    reg_rows = tables.registration_rows(registrations)
    p.append(tables.metrics_table(reg_rows, list(reg_rows[0]) if reg_rows else []))
    if rounds:
        p.append("<p>Every round (−1: stage metadata; <em>change</em>: RMS change from the "
                 "previous round; <em>error</em>: against the true transform, where known):</p>")
        p.append(tables.metrics_table(rounds, list(rounds[0])))
    big = {v.name for v in shown} | {f["section"] for f in flagged}
    if overlays:
        p.append("<p class='muted'>QC figures of the test sections drawn in full and of the "
                 "flagged sections at a readable size, the others together on one sheet "
                 "(each in full in <code>results/registration/{section}.png</code>).</p>")
    for name, png in overlays.items():
        if name not in big:
            continue
        p.append(f"<figure>{img(figures.downsampled(png, 700), f'registration {name}')}"
                 f"<figcaption>{esc(name)} (downsampled): EM (magenta) and FM (green), placed "
                 "by stage metadata, by the multimodal search and after the last round."
                 "</figcaption></figure>")
    rest = {n: png for n, png in overlays.items() if n not in big}
    if rest:
        p.append(f"<figure>{img(figures.contact_sheet(rest), 'registration QC sheet')}"
                 f"<figcaption>The other {len(rest)} sections' registration QC, small: EM "
                 "(magenta) and FM (green) by stage metadata, multimodal search and last "
                 "round.</figcaption></figure>")
    seams = tables.seam_rows(ingests)
    if seams:  # SEM montages stitched by ingest (em2fm.montage)
        p.append("<h3>SEM montages</h3><p>Every tile overlap: the correction of the stage "
                 "positions it measured (SEM px), its correlation, and its residual after the "
                 "globally consistent solution (SEM px).</p>")
        p.append(tables.metrics_table(seams, list(seams[0])))
    # configuration and provenance
    p.append("<h2 id='config'>Configuration</h2><p>The configuration as resolved by the "
             "workflow (config.yaml, overrides and defaults from the schema):</p>")
    p.append(f"<pre>{esc(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))}</pre>")
    p.append("<h2 id='provenance'>Provenance</h2>")
    info = {**provenance.git_state(repo), **provenance.versions(), **device()}
    p.append(tables.metrics_table([{"key": k, "value": v} for k, v in info.items()],
                                  ["key", "value"], "Code, software and the machine that "
                                  "built this report"))
    if benchmarks:
        bench = provenance.benchmark_rows(list(benchmarks), benchmark_root,
                                             [v.name for v in views] + list(em_only))
        total = {"step": "all steps", "jobs": sum(b["jobs"] for b in bench),
                 "wall time, sum (s)": sum(b["wall time, sum (s)"] for b in bench),
                 "wall time, longest job (s)": max(b["wall time, longest job (s)"]
                                                   for b in bench),
                 "CPU time (s)": sum(b["CPU time (s)"] for b in bench),
                 "peak memory (MB)": max(b["peak memory (MB)"] for b in bench)}
        p.append(tables.metrics_table([*bench, total], list(total), "Wall time and peak "
                                      "memory (max RSS) per step, from the benchmark files "
                                      "of its jobs"))
    files = provenance.input_files(ingests)
    p.append(tables.metrics_table(files, ["section", "file", "variant", "dialect", "bytes",
                                          "sha256"], "Input exports with their SHA-256"))
    p.append("</body></html>")
    return "\n".join(p)
