"""Peak memory of the workflow's stages by section size, measured side by side in one run.

    python benchmarks/memory.py chain [--sizes 4096 16384 32768] [--scratch .tmp/memory]

- **chain**: for each size, a synthetic Odemis-like section (an n² px SEM OME-TIFF at 5 nm,
  tiled 256² and LZW-compressed, written tile by tile; a 2-channel FM OME-TIFF at 100 nm
  offset by a stage error; see :mod:`_synthetic`) goes through ``ingest``,
  ``register`` (multimodal round 0, config defaults), ``register_final`` (the final
  registration's QC overlay, which smooths the EM again) and ``tiles`` (config defaults:
  em_scale 4, the FM pixel as target), each stage in a fresh process (the package
  functions the rules' scripts call). Printed per stage: peak RSS (VmHWM), RSS right
  after the imports, and wall time; then the largest size's peak RSS over the smallest's.

Target (issue 8): peak RSS does not grow with section size; 32768² EM under 2 GiB.

The table in benchmarks/tables/memory_chain.tsv was printed by:

    nice python benchmarks/memory.py chain --tsv benchmarks/tables/memory_chain.tsv
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _synthetic import peak_rss_mib, write_odemis_section

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "register", "register_final", "tiles")


def _config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "config.yaml").read_text())


def chain_one(args: argparse.Namespace) -> None:
    """One stage of one section in this process; print peak RSS and time as JSON."""
    d = Path(args.dir)
    cfg = _config()
    if args.stage == "ingest":
        from em2fm import ingest

        rss0, t = peak_rss_mib(), time.perf_counter()
        dyes = {"Hoechst": {"excitation_nm": 405, "emission_nm": 450},
                "Insulin": {"excitation_nm": 590, "emission_nm": 617}}
        ingest.run(d / "raw", "S", ["Hoechst", "Insulin"], dyes, 20, None, d / "ingest.json",
                   d / "ingest.npz", role="train")
        out = d / "ingest.npz"
    elif args.stage == "register_final":  # the QC overlay reads the EM again
        from em2fm import register

        rss0, t = peak_rss_mib(), time.perf_counter()
        register.run_final(d / "ingest.json", d / "ingest.npz", d / "register.json",
                           d / "final.json", d / "final.png")
        out = d / "final.png"
    elif args.stage == "register":
        from em2fm import register

        rss0, t = peak_rss_mib(), time.perf_counter()
        doc = register.run_multimodal(d / "ingest.json", d / "ingest.npz", None,
                                      cfg["register"], 0, d / "register.json")
        out = d / "register.json"
        print(f"register: {doc['status']}, correction "
              f"{doc['correction']['shift_magnitude_nm']:.0f} nm", file=sys.stderr)
    else:
        from em2fm import tiles

        rss0, t = peak_rss_mib(), time.perf_counter()
        tiles.run(d / "ingest.json", d / "ingest.npz", d / "register.json", cfg["tiles"],
                  "train", d / "tiles.npz", d / "tiles.json")
        out = d / "tiles.npz"
    seconds = time.perf_counter() - t
    print(json.dumps({"rss_mib": peak_rss_mib(), "rss_after_import_mib": rss0,
                      "seconds": seconds, "output_mib": out.stat().st_size / 2**20}))


def chain(args: argparse.Namespace) -> None:
    root = Path(args.scratch)
    rows = []
    print("\nPeak memory by stage: synthetic Odemis sections (SEM 5 nm px, tiled LZW OME-TIFF; "
          "FM 100 nm px, 2 channels), config defaults; each stage in a fresh process")
    header = ["EM px", "SEM file GiB", "stage", "peak RSS MiB", "after import MiB",
              "seconds", "output MiB"]
    print("  " + "\t".join(header))
    for n in args.sizes:
        d = root / f"em{n}"
        shutil.rmtree(d, ignore_errors=True)
        try:
            t = time.perf_counter()
            info = write_odemis_section(d / "raw", n)
            print(f"  (section {n}² written in {time.perf_counter() - t:.0f} s)",
                  file=sys.stderr, flush=True)
            for stage in STAGES:
                res = subprocess.run([sys.executable, __file__, "chain-one", "--stage", stage,
                                      "--dir", str(d)], capture_output=True, text=True)
                if res.returncode:
                    sys.exit(f"{stage} of {n}² failed:\n{res.stderr[-3000:]}")
                r = json.loads(res.stdout.strip().splitlines()[-1])
                row = [f"{n}²", f"{info['sem_bytes'] / 2**30:.2f}", stage,
                       f"{r['rss_mib']:.0f}", f"{r['rss_after_import_mib']:.0f}",
                       f"{r['seconds']:.1f}", f"{r['output_mib']:.1f}"]
                rows.append(row)
                print("  " + "\t".join(row), flush=True)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    peaks = {(r[0], r[2]): float(r[3]) for r in rows}
    lo, hi = f"{args.sizes[0]}²", f"{args.sizes[-1]}²"
    ratios = {s: peaks[(hi, s)] / peaks[(lo, s)] for s in STAGES}
    print("  peak RSS " + hi + " / " + lo + ": "
          + ", ".join(f"{s} {v:.2f}×" for s, v in ratios.items()))
    if args.tsv:
        text = "\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows)
        text += f"# peak RSS {hi} / {lo}: " + ", ".join(
            f"{s} {v:.2f}x" for s, v in ratios.items()) + "\n"
        Path(args.tsv).write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    c = sub.add_parser("chain", help="ingest, register and tiles by section size")
    c.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768])
    c.add_argument("--scratch", default=str(ROOT / ".tmp" / "memory"))
    c.add_argument("--tsv", default=None, help="also write the table here")
    one = sub.add_parser("chain-one")
    one.add_argument("--stage", choices=STAGES, required=True)
    one.add_argument("--dir", required=True)
    args = p.parse_args()
    {"chain": chain, "chain-one": chain_one}[args.part](args)


if __name__ == "__main__":
    main()
