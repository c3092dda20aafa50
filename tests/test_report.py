import re

from em2fm import report


def _build(mini_run, path):
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
        html_path=str(path))
    return path.read_text()


def test_report_is_self_contained_and_complete(mini_run, tmp_path):
    html = _build(mini_run, tmp_path / "report.html")
    assert "http://" not in html and "https://" not in html  # no external resource
    assert not re.search(r"<(script|link)\b", html)
    imgs = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', html)
    assert "S3 Hoechst" in imgs  # the reference figure of the test section
    assert "training curve" in imgs and sum(a.startswith("registration") for a in imgs) == 3
    for text in ("Summary on the test sections", "noise_ceiling_pcc", "pcc_baseline_em",
                 "Configuration", "Provenance", "sha256", "torch", "measured (red)",
                 "passed its checks", "stage metadata"):
        assert text in html, text


def test_flagged_sections_are_left_out_of_the_summary():
    rows = [{"section": s, "split": "test", "channel": "H", "pcc": v,
             "registration_status": st}
            for s, v, st in (("A", 0.8, "ok"), ("B", 0.0, "failed"), ("C", 0.1, "low_confidence"))]
    summary = report.summary_rows(rows)
    assert summary[0]["sections"] == 1 and summary[0]["pcc"] == 0.8
    regs = [{"section": "A", "status": "ok"},
            {"section": "B", "status": "failed", "reasons": ["shift at bound"],
             "use_for_training": False}]
    flagged = report.flagged_sections(regs)
    assert [f["section"] for f in flagged] == ["B"] and flagged[0]["used for training"] == "no"


def test_zoom_regions_are_inside_the_grid(mini_run):
    root = mini_run["root"]
    v = report.load_view("S3", root / "tiles" / "S3.npz", root / "predictions" / "S3.ome.tif",
                         root / "predictions" / "S3.uncertainty.ome.tif")
    regions = report.zoom_regions(v, 0, 20)
    for _, r, c in regions:
        assert 0 <= r <= v.mask.shape[0] - 20 and 0 <= c <= v.mask.shape[1] - 20
    for i, (_, r1, c1) in enumerate(regions):  # 80 px leave room for 3 disjoint 20 px zooms
        for _, r2, c2 in regions[i + 1:]:
            assert abs(r1 - r2) >= 20 or abs(c1 - c2) >= 20


def test_em_only_sections_and_model_provenance(mini_run):
    from em2fm.pretrained import model_card

    root = mini_run["root"]
    part = report.em_only_sections_html(
        [("S3", root / "ingest" / "S3.json", root / "ingest" / "S3.npz",
          root / "predictions" / "S3.ome.tif")])
    assert "EM-only sections" in part and part.count("<img") == 1 and "PCC" in part
    import torch

    path = root / "model" / "model.pt"
    meta = {k: v for k, v in torch.load(path, weights_only=True).items() if k != "state_dict"}
    card = model_card(path)
    given = report.model_provenance_html(path, meta, card)
    assert card["sha256"] in given and "given" in given and ">S1<" in given
    assert "trained in this run" in report.model_provenance_html(path, meta, None)
    warn = report.ingest_warnings_html([{"section": "S1", "name": "S 1", "role": "test",
                                         "warnings": ["non-square pixels"]}])
    assert "S 1" in warn and "non-square" in warn
    assert report.ingest_warnings_html([{"section": "S1", "warnings": []}]) == ""
