"""Report: one self-contained HTML file (no script, no external URL) to share a run.

A colleague who never saw the project reads in it what was done, how good the prediction
is (PCC, SSIM, NRMSE per split and channel with bootstrap intervals, beside trivial
baselines and the noise ceiling) and where it fails (local PCC maps, automatic zooms on
the best and worst regions, the low-confidence map), then the training curve, the
registration QC, the resolved configuration and the provenance (git commit, software,
device, wall time and peak memory per step, input checksums).

Modules: :mod:`.figures` (images, data URIs), :mod:`.tables`, :mod:`.page` (the HTML);
shared with other stages: :mod:`em2fm.provenance`, :mod:`em2fm.scalebar`, :mod:`em2fm.metrics`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import io
from ..evaluate import read_tsv
from ..odemis import read_file
from ..provenance import sha256, versions
from .figures import SectionView, overlay_rgb, zoom_regions
from .page import build_html
from .tables import flagged_sections, summary_rows

log = logging.getLogger(__name__)

__all__ = ["SectionView", "build_html", "flagged_sections", "load_view", "overlay_rgb", "run",
           "sha256", "summary_rows", "versions", "zoom_regions"]


def load_view(section: str, tiles_npz: str | Path, prediction: str | Path,
              uncertainty: str | Path) -> SectionView:
    """Arrays of one section for the figures (measured FM None when the tiles have none)."""
    arrays = io.load_npz(tiles_npz)
    meta = io.read_json(Path(tiles_npz).with_suffix(".json"))
    pred = read_file(prediction).images[0]
    unc = read_file(uncertainty).images[0]
    assert pred.data is not None and unc.data is not None
    fm = arrays["fm"] if "fm" in arrays and arrays["fm"].size else None
    return SectionView(section, meta["split"], arrays["em"], fm, pred.data, unc.data,
                       arrays["mask"].astype(bool), int(meta["em_scale"]),
                       float(meta["target_pixel_size_m"]) * 1e9, list(meta["channels"]))


def run(metrics_tsv: str | None, training_tsv: str | None, model_path: str,
        tiles_npz: list[str], predictions: list[str], uncertainties: list[str],
        ingest_json: list[str], registration_json: list[str], overlays: list[str],
        rounds_tsv: str | None, sections: list[str], config: dict, simulated: bool,
        zoom_size_um: float, html_path: str, local_pcc_um: float = 3.0,
        max_section_figures: int = 4, benchmarks: list[str] = (),
        benchmark_root: str = "results/benchmarks", fm_sections: list[str] | None = None,
        em_only: list[str] | None = None, em_only_npz: list[str] | None = None,
        model_card: dict | None = None) -> None:
    """Build the report from the rule's inputs and write it.

    ``sections`` are all sections (``predictions``, ``uncertainties`` and ``ingest_json``
    follow them); ``fm_sections`` those with FM (``tiles_npz``, ``registration_json``,
    ``overlays``), ``em_only`` the predict sections (``em_only_npz``: their ingest npz).
    Without ``metrics_tsv`` (no section with FM) or ``training_tsv`` (a given model) those
    parts are left out; ``model_card`` (:func:`em2fm.pretrained.model_card`) describes a
    given model.
    """
    import torch

    from .em_only import em_only_sections_html, ingest_warnings_html, model_provenance_html

    fm_sections = list(sections if fm_sections is None else fm_sections)
    em_only = list(em_only or [])
    ckpt = torch.load(model_path, map_location="cpu", weights_only=True)
    model = {k: v for k, v in ckpt.items() if k != "state_dict"}
    pred_of = dict(zip(sections, predictions, strict=True))
    unc_of = dict(zip(sections, uncertainties, strict=True))
    ingest_of = dict(zip(sections, ingest_json, strict=True))
    views = [load_view(s, t, pred_of[s], unc_of[s])
             for s, t in zip(fm_sections, tiles_npz, strict=True)]
    ingests = [io.read_json(p) for p in ingest_json]
    text = build_html(
        metrics=read_tsv(metrics_tsv) if metrics_tsv else [], training_tsv=training_tsv,
        views=views, registrations=[io.read_json(p) for p in registration_json],
        overlays=dict(zip(fm_sections, overlays, strict=True)),
        rounds=([{**r, "round": int(r["round"])} for r in read_tsv(rounds_tsv)]
                if rounds_tsv else []),
        ingests=ingests, config=config, simulated=simulated,
        zoom_um=zoom_size_um, model=model, local_pcc_um=local_pcc_um,
        max_section_figures=max_section_figures, benchmarks=list(benchmarks),
        benchmark_root=benchmark_root, em_only=em_only,
        em_only_html=em_only_sections_html(
            [(s, ingest_of[s], n, pred_of[s])
             for s, n in zip(em_only, em_only_npz or [], strict=True)]),
        warnings_html=ingest_warnings_html(ingests),
        model_html=model_provenance_html(model_path, model, model_card),
        model_given=model_card is not None)
    io.write_text(html_path, text)
    log.info("report: %d sections (%d EM only), %.2f MB", len(views) + len(em_only),
             len(em_only), len(text.encode()) / 1e6)
