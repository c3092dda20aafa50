"""Report size as sections are added: a finished run's sections, its test section repeated.

    python benchmarks/report_size.py --results results 6 12 24 48

Builds the report's HTML in memory from ``RESULTS`` (tiles, predictions, registration,
ingest, metrics.tsv, model/training.tsv) and prints its size for each section count; the
sections beyond the run's own are copies of its last test section (split ``test``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from em2fm import io, report
from em2fm.evaluate import read_tsv
from em2fm.report import page


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", type=Path)
    ap.add_argument("counts", nargs="+", type=int)
    a = ap.parse_args()
    r = a.results
    secs = sorted(p.stem for p in (r / "tiles").glob("*.npz"))
    views = [report.load_view(s, r / "tiles" / f"{s}.npz", r / "predictions" / f"{s}.ome.tif",
                              r / "predictions" / f"{s}.uncertainty.ome.tif") for s in secs]
    metrics = read_tsv(r / "metrics.tsv")
    test = [v for v in views if v.split == "test"][-1]
    regs = [io.read_json(r / "registration" / f"{s}.json") for s in secs]
    ings = [io.read_json(r / "ingest" / f"{s}.json") for s in secs]
    print("sections\ttest sections\treport MB")
    for n in a.counts:
        extra = [replace(test, name=f"X{i:03d}") for i in range(max(0, n - len(views)))]
        rows = metrics + [{**m, "section": v.name, "pcc": m["pcc"] + i * 1e-3}
                          for i, v in enumerate(extra) for m in metrics
                          if m["section"] == test.name]
        overlays = {s: r / "registration" / f"{s}.png" for s in secs}
        overlays |= {v.name: r / "registration" / f"{test.name}.png" for v in extra}
        html = page.build_html(
            metrics=rows, training_tsv=r / "model" / "training.tsv", views=views + extra,
            registrations=regs, overlays=overlays, rounds=[], ingests=ings,
            config={"raw_dir": None}, simulated=True, zoom_um=4.0, model={"step": 0},
            max_section_figures=4)
        n_test = sum(v.split == "test" for v in views + extra)
        print(f"{len(views) + len(extra)}\t{n_test}\t{len(html.encode()) / 1e6:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
