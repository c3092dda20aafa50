"""Tables of the report: summaries with confidence intervals, flags, registration rows.

Every cell goes through :func:`cell`, which HTML-escapes it: section and channel names come
from the user's folders and files.
"""

from __future__ import annotations

import html

import numpy as np

from ..metrics import bootstrap_ci

TEXT = ("section", "split", "channel", "status", "reasons", "step", "software", "file",
        "sha256", "key", "value", "region", "tag")
SUMMARY_KEYS = ("pcc", "pcc_baseline_em", "ssim", "nrmse", "nrmse_baseline_mean", "r2",
                "r2_baseline_mean", "noise_ceiling_pcc", "pcc_vs_clean", "pcc_vs_specific",
                "target_vs_clean_pcc", "registration_error_nm", "multimodal_error_nm",
                "metadata_error_nm")
WITH_CI = ("pcc", "ssim", "nrmse")


def cell(v: object) -> str:
    """One table cell as escaped HTML text (floats with 3 decimals, NaN as a dash)."""
    if isinstance(v, float | np.floating):
        v = float(v)
        if not np.isfinite(v):
            return "–"
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return html.escape(str(v))


def metrics_table(rows: list[dict], columns: list[str], caption: str = "") -> str:
    """HTML table of rows (missing values as a dash)."""
    def cls(c: str) -> str:
        return ' class="l"' if c in TEXT or "CI" in c else ""

    head = "".join(f"<th{cls(c)}>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td{cls(c)}>{cell(r.get(c, float('nan')))}</td>" for c in columns)
        + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<div class="wide"><table>{cap}<tr>{head}</tr>{body}</table></div>'


def ci_text(lo: float, hi: float, n: int) -> str:
    """A confidence interval as text, or why there is none."""
    if n < 2 or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"n/a ({n} section{'s' if n != 1 else ''})"
    return f"[{lo:.3f}, {hi:.3f}]"


def summary_rows(rows: list[dict], split: str = "test",
                 statuses: tuple[str, ...] = ("ok",)) -> list[dict]:
    """Mean of each metric per channel over the sections of ``split``, with 95 % CIs.

    Only sections whose registration status is in ``statuses`` and that have a measured
    PCC count: a PCC against a misregistered FM measures the registration, not the network.
    ``pcc 95% CI`` (and SSIM, NRMSE) is a percentile bootstrap over sections.
    """
    out = []
    for ch in dict.fromkeys(r["channel"] for r in rows):
        sel = [r for r in rows if r["channel"] == ch and r["split"] == split
               and r.get("registration_status", "ok") in statuses
               and np.isfinite(float(r.get("pcc", float("nan"))))]
        if not sel:
            continue
        agg: dict = {"split": split, "channel": ch, "sections": len(sel)}
        for key in SUMMARY_KEYS:
            vals = [float(r.get(key, float("nan"))) for r in sel]
            mean, lo, hi = bootstrap_ci(vals)
            agg[key] = mean
            if key in WITH_CI:
                n = int(np.isfinite(vals).sum())
                agg[f"{key} 95% CI"] = ci_text(lo, hi, n)
        out.append(agg)
    return out


def split_summary(rows: list[dict], statuses: tuple[str, ...] = ("ok",)) -> list[dict]:
    """:func:`summary_rows` of test, validation and training sections, in that order."""
    return [r for s in ("test", "val", "train") for r in summary_rows(rows, s, statuses)]


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


def worst_rows(rows: list[dict], n: int = 3) -> list[dict]:
    """The ``n`` section × channel rows of lowest PCC (test first, then any split)."""
    scored = [r for r in rows if np.isfinite(float(r.get("pcc", float("nan"))))]
    scored.sort(key=lambda r: (r["split"] != "test", float(r["pcc"])))
    return scored[:n]


def seam_rows(ingests: list[dict]) -> list[dict]:
    """One row per SEM tile overlap of every stitched montage (``ingest["montage"]``)."""
    return [{"section": ing["section"], "tiles": " / ".join(s["tiles"]),
             "correction (px)": ", ".join(f"{v:.2f}" for v in s["correction_px"]),
             "ncc": f"{s['ncc']:.3f}", "used": s["used"],
             "residual (px)": f"{s['residual_px']:.3f}"}
            for ing in ingests for s in ing.get("montage", {}).get("seams", [])]
