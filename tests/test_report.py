import re
from dataclasses import replace

import pytest
from chromium_check import browser_check, check_page, require_chromium

from em2fm import io, provenance, report, scalebar
from em2fm.evaluate import read_tsv
from em2fm.report import figures, page, tables

HOSTILE = "<script>alert(1)</script>"


def _build(mini_run, path, **extra):
    root = mini_run["root"]
    s = mini_run["sections"]
    report.run(
        metrics_tsv=str(root / "metrics.tsv"), training_tsv=str(root / "model" / "training.tsv"),
        model_path=str(root / "model" / "model.pt"),
        tiles_npz=[str(root / "tiles" / f"{x}.npz") for x in s],
        predictions=[str(root / "predictions" / f"{x}.ome.tif") for x in s],
        uncertainties=[str(root / "predictions" / f"{x}.uncertainty.ome.tif") for x in s],
        ingest_json=[str(root / "ingest" / f"{x}.json") for x in s],
        registration_json=[str(root / "registration" / f"{x}.json") for x in s],
        overlays=[str(root / "registration" / f"{x}.png") for x in s],
        rounds_tsv=str(root / "registration_rounds.tsv"), sections=s,
        config={"raw_dir": None, "channels": ["Hoechst"]}, simulated=True, zoom_size_um=2.0,
        html_path=str(path), **extra)
    return path.read_text()


def _views(mini_run):
    root = mini_run["root"]
    return [report.load_view(s, root / "tiles" / f"{s}.npz",
                             root / "predictions" / f"{s}.ome.tif",
                             root / "predictions" / f"{s}.uncertainty.ome.tif")
            for s in mini_run["sections"]]


def _page(mini_run, views, metrics, **kw):
    """build_html on the mini run with the given views and metric rows."""
    root = mini_run["root"]
    regs = [io.read_json(root / "registration" / f"{s}.json") for s in mini_run["sections"]]
    ingests = [io.read_json(root / "ingest" / f"{s}.json") for s in mini_run["sections"]]
    return page.build_html(
        metrics=metrics, training_tsv=root / "model" / "training.tsv", views=views,
        registrations=kw.pop("registrations", regs), overlays=kw.pop("overlays", {}),
        rounds=[], ingests=kw.pop("ingests", ingests), config={"raw_dir": None},
        simulated=True, zoom_um=2.0, model={"step": 1}, **kw)


def test_report_is_self_contained_and_complete(mini_run, tmp_path):
    html = _build(mini_run, tmp_path / "report.html")
    assert "http://" not in html and "https://" not in html  # no external resource
    assert not re.search(r"<(script|link|iframe|object)\b", html)
    imgs = re.findall(r'<img alt="([^"]*)" src="data:image/(?:png|jpeg);base64,', html)
    assert len(imgs) == html.count("<img ")
    assert {"S3 overview", "S3 zooms", "histograms", "thumbnails", "training curve"} <= set(imgs)
    # S3 (test) in full; S1 and S2 (ok, not test) together on one QC sheet
    assert {a for a in imgs if a.startswith("registration")} == {"registration S3",
                                                                  "registration QC sheet"}
    assert "S1 overview" not in imgs  # only test sections in full; the rest as thumbnails
    for text in ("What was done", "How good is it", "Where it fails", "noise_ceiling_pcc",
                 "pcc_baseline_em", "nrmse_baseline_mean", "pcc 95% CI", "ssim",
                 "local PCC", "best local PCC", "worst local PCC", "Configuration",
                 "Provenance", "sha256", "torch", "git commit", "git dirty", "CPUs",
                 "passed its checks", "stage metadata", "n/a (1 section)"):
        assert text in html, text


def test_provenance_reads_the_benchmark_files(mini_run, tmp_path):
    bench = tmp_path / "benchmarks"
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rel, s, rss in (("ingest/S1.tsv", 2.0, 100.0), ("ingest/S2.tsv", 3.0, 150.0),
                        ("train.tsv", 60.0, 900.5), ("train/round0.tsv", 9.0, 50.0)):
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / rel).write_text(header + f"{s}\t0:00:0{s:.0f}\t{rss}\t1\t1\t1\t1\t1\t1\t{s}\n")
    rows = provenance.benchmark_rows(sorted(bench.rglob("*.tsv")), bench, ["S1", "S2"])
    by = {r["step"]: r for r in rows}
    assert by["ingest"]["jobs"] == 2 and by["ingest"]["wall time, sum (s)"] == 5.0
    assert by["ingest"]["peak memory (MB)"] == 150.0 and by["train"]["jobs"] == 1
    assert by["train/round0"]["wall time, sum (s)"] == 9.0
    html = _build(mini_run, tmp_path / "r.html", benchmarks=sorted(map(str, bench.rglob("*.tsv"))),
                  benchmark_root=str(bench))
    assert "peak memory (MB)" in html and "900.500" in html and "all steps" in html


def test_git_state_names_the_commit():
    state = provenance.git_state()
    assert re.fullmatch(r"[0-9a-f]{40}", state["git commit"]) or "not a git" in state[
        "git commit"]
    assert state["git dirty"] in ("no", "unknown") or state["git dirty"].startswith("yes")


def test_flagged_sections_are_left_out_of_the_summary():
    rows = [{"section": s, "split": "test", "channel": "H", "pcc": v,
             "registration_status": st}
            for s, v, st in (("A", 0.8, "ok"), ("B", 0.0, "failed"), ("C", 0.1, "low_confidence"))]
    summary = report.summary_rows(rows)
    assert summary[0]["sections"] == 1 and summary[0]["pcc"] == 0.8
    assert summary[0]["pcc 95% CI"] == "n/a (1 section)"
    regs = [{"section": "A", "status": "ok"},
            {"section": "B", "status": "failed", "reasons": ["shift at bound"],
             "use_for_training": False}]
    flagged = report.flagged_sections(regs)
    assert [f["section"] for f in flagged] == ["B"] and flagged[0]["used for training"] == "no"


def test_summary_per_split_with_confidence_intervals():
    rows = [{"section": f"S{i}", "split": split, "channel": "H", "pcc": p, "ssim": 0.5,
             "nrmse": 0.1, "registration_status": "ok"}
            for i, (split, p) in enumerate([("train", 0.9), ("train", 0.8), ("val", 0.7),
                                            ("test", 0.6), ("test", 0.4), ("test", 0.5)])]
    rows.append({"section": "E", "split": "test", "channel": "H", "pcc": float("nan"),
                 "registration_status": "ok"})  # EM only: no PCC, not counted
    summary = tables.split_summary(rows)
    assert [(r["split"], r["sections"]) for r in summary] == [("test", 3), ("val", 1),
                                                              ("train", 2)]
    test = summary[0]
    assert test["pcc"] == pytest.approx(0.5)
    lo, hi = map(float, re.findall(r"[-\d.]+", test["pcc 95% CI"]))
    assert 0.4 <= lo < 0.5 < hi <= 0.6


def test_zoom_regions_are_inside_the_grid(mini_run):
    v = _views(mini_run)[2]
    regions = report.zoom_regions(v, 0, 20)
    assert [r[0] for r in regions] == ["best local PCC", "worst local PCC", "least confident"]
    for _, r, c in regions:
        assert 0 <= r <= v.mask.shape[0] - 20 and 0 <= c <= v.mask.shape[1] - 20
    for i, (_, r1, c1) in enumerate(regions):  # 80 px leave room for 3 disjoint 20 px zooms
        for _, r2, c2 in regions[i + 1:]:
            assert abs(r1 - r2) >= 20 or abs(c1 - c2) >= 20
    from em2fm.metrics import pcc

    def box(r, c):
        sl = (slice(r, r + 20), slice(c, c + 20))
        m = v.mask[sl]
        return pcc(v.pred[0][sl][m], v.truth[0][sl][m])

    assert box(*regions[0][1:]) > box(*regions[1][1:])  # best beats worst


def test_scale_bar_lengths():
    assert scalebar.nice_length_um(25.6) == 5
    assert scalebar.nice_length_um(3.0) == 0.5
    assert scalebar.nice_length_um(180) == 50
    assert scalebar.label(0.5) == "500 nm" and scalebar.label(5) == "5 µm"
    assert scalebar.label(2000) == "2 mm"
    with pytest.raises(ValueError):
        scalebar.nice_length_um(0)


def test_scale_bar_is_drawn_to_scale():
    plt = figures._plt()
    import numpy as np
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots()
    ax.imshow(np.zeros((100, 256)))
    length = scalebar.add_scalebar(ax, pixel_nm=100, width_px=256)  # 25.6 µm wide
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert length == 5 and len(bars) == 1
    assert bars[0].get_width() == pytest.approx(50)  # 5 µm at 100 nm/px
    assert any(t.get_text() == "5 µm" for t in ax.texts)
    plt.close(fig)


def test_em_only_sections_are_shown_without_pcc(mini_run):
    views = _views(mini_run)
    views[2] = replace(views[2], truth=None)
    metrics = [r for r in read_tsv(mini_run["root"] / "metrics.tsv") if r["section"] != "S3"]
    metrics.append({"section": "S3", "split": "test", "channel": "Hoechst",
                    "registration_status": "ok", "pcc": float("nan")})
    regions = figures.zoom_regions(views[2], 0, 20)
    assert [r[0] for r in regions] == ["strongest predicted signal", "least confident"]
    html = _page(mini_run, views, metrics)
    assert "S3 overview" in html and "no honest estimate" in html


def test_hostile_names_are_escaped(mini_run, tmp_path):
    views = [replace(v, name=f"{v.name}{HOSTILE}", channels=[HOSTILE + "$x$"])
             for v in _views(mini_run)]
    metrics = [{**r, "section": r["section"] + HOSTILE, "channel": HOSTILE + "$x$"}
               for r in read_tsv(mini_run["root"] / "metrics.tsv")]
    root = mini_run["root"]
    regs = [{**io.read_json(root / "registration" / f"{s}.json"), "section": s + HOSTILE,
             "reasons": [HOSTILE]} for s in mini_run["sections"]]
    ingests = [{**io.read_json(root / "ingest" / f"{s}.json"), "section": s + HOSTILE}
               for s in mini_run["sections"]]
    html = _page(mini_run, views, metrics, registrations=regs, ingests=ingests,
                 overlays={f"S1{HOSTILE}": root / "registration" / "S1.png"})
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    path = tmp_path / "hostile.html"
    path.write_text(html)
    browser_check(path, tmp_path, expect_images=html.count("<img "))


def test_report_grows_sub_linearly(mini_run):
    """Full figures for at most max_section_figures test sections, thumbnails for the rest."""
    base = _views(mini_run)
    metrics = read_tsv(mini_run["root"] / "metrics.tsv")

    def size(n_test: int) -> int:
        views = base[:2] + [replace(base[2], name=f"T{i}") for i in range(n_test)]
        rows = [r for r in metrics if r["section"] != "S3"] + [
            {**metrics[2], "section": f"T{i}", "pcc": 0.5 + i / 100} for i in range(n_test)]
        return len(_page(mini_run, views, rows, max_section_figures=2))

    one, two, eight = size(1), size(2), size(8)
    full = two - one  # one more full figure
    assert eight - two < 0.5 * 6 * full, (one, two, eight)  # 6 more sections: thumbnails
    # past 36 thumbnails the sheet stops growing (smaller thumbnails): a section then adds
    # table rows only
    forty, hundred = size(40), size(100)
    assert (hundred - forty) / 60 < 0.5 * (eight - two) / 6, (two, eight, forty, hundred)


def test_report_in_headless_chromium(mini_run, tmp_path):
    html = _build(mini_run, tmp_path / "report.html")
    browser_check(tmp_path / "report.html", tmp_path, html.count("<img "))


def test_chromium_check_sees_failures(tmp_path):
    """The browser check itself: a broken image, a request, a console error, a dialog."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><img alt='x' src='data:image/png;base64,AAAA'>"
                   "<img alt='y' src='http://127.0.0.1:9/nothing.png'>"
                   "<script>console.error('boom'); alert(1)</script></body></html>")
    r = check_page(bad, tmp_path / "chromium", tmp_path / "bad.png", require_chromium())
    assert len(r.broken_images) == 2
    assert r.network_requests == ["http://127.0.0.1:9/nothing.png"]
    assert any("boom" in e for e in r.console_errors)
    assert r.dialogs == ["1"] and r.scripts == 1


def test_em_only_sections_and_model_provenance(mini_run):
    from em2fm.pretrained import model_card
    from em2fm.report import em_only

    root = mini_run["root"]
    part = em_only.em_only_sections_html(
        [("S3", root / "ingest" / "S3.json", root / "ingest" / "S3.npz",
          root / "predictions" / "S3.ome.tif")])
    assert "EM-only sections" in part and part.count("<img") == 1 and "no PCC" in part
    import torch

    path = root / "model" / "model.pt"
    meta = {k: v for k, v in torch.load(path, weights_only=True).items() if k != "state_dict"}
    card = model_card(path)
    given = em_only.model_provenance_html(path, meta, card)
    assert card["sha256"] in given and "given" in given and "S1" in given
    assert "trained in this run" in em_only.model_provenance_html(path, meta, None)
    warn = em_only.ingest_warnings_html([{"section": "S1", "name": "S 1", "role": "test",
                                         "warnings": ["non-square pixels"]}])
    assert "S 1" in warn and "non-square" in warn
    assert em_only.ingest_warnings_html([{"section": "S1", "warnings": []}]) == ""
