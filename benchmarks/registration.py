"""Registration accuracy, failure detection and speed on simulated sections with known truth.

    python benchmarks/registration.py [--model results/model/model.pt] [--quick]

Sections are simulated (not read from a run) in four kinds: dense or sparse signal
(sparse: 20 % of nuclei take up Hoechst and the EM chromatin contrast is 0.3, so the EM
does not mirror the stain) × two FM/EM noise levels (the default photon budget and
dwell time, or a quarter of both). Their FM stage metadata is then replaced by the true
placement mis-set by a grid of errors (shift 0.2–3 µm in a random direction, rotation
0–2°, FM pixel-size calibration ±1 %). Each case is registered as the workflow does it:

- ``metadata``: the stage metadata alone;
- ``multimodal``: round 0 (exhaustive + local search, config defaults: Mattes mutual
  information, similarity transform), beside ``correlation`` (the same with the squared
  normalised correlation) and ``rigid`` (the same without scale);
- ``round 1``: the measured FM registered to the prediction of a fixed trained model
  (``--model``, by default the main job's final model; the sections simulated here are
  not among its training sections).

Printed per method: median and 95th percentile of the error (FM px, RMS displacement
over the EM field between the estimated and the true transform), the rate of *silent*
failures (error > 1 FM px with status ``ok``), the statuses, and seconds per section.
Then the test PCC of the same model against registration error injected on purpose.
Accuracy numbers, not timings, are the point; times are for one process on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from em2fm import io  # noqa: E402
from em2fm.geometry import (  # noqa: E402
    ImageGeometry,
    em_field_fm_pixels,
    moving_to_fixed_px,
)
from em2fm.register import RegistrationParams, StatusParams, register_images  # noqa: E402
from em2fm.register.landscape import rms_difference_px  # noqa: E402
from em2fm.register.refine import refine_to_prediction  # noqa: E402
from em2fm.register.status import multimodal_status, refine_status  # noqa: E402

KINDS = {
    "dense": {},
    "dense, noisy": {"hoechst_photons_e": 4.0, "insulin_photons_e": 55.0,
                     "em_dwell_time_s": 0.75e-6},
    "sparse": {"hoechst_stained_nucleus_fraction": 0.2, "em_chromatin_contrast": 0.3},
    "sparse, noisy": {"hoechst_stained_nucleus_fraction": 0.2, "em_chromatin_contrast": 0.3,
                      "hoechst_photons_e": 4.0, "insulin_photons_e": 55.0,
                      "em_dwell_time_s": 0.75e-6},
}
SHIFTS_UM = (0.2, 0.5, 1.0, 2.0, 3.0)
ROTATIONS_DEG = (0.0, 0.5, 1.0, 2.0)
SCALES = (-0.01, 0.0, 0.01)
# other multimodal settings, measured beside the default (mattes, similarity)
ALTERNATIVES = {"correlation": {"metric": "correlation"}, "rigid": {"transform": "rigid"}}
METHODS = ("metadata", *ALTERNATIVES, "multimodal", "round 1")
FIRST_INDEX = 20  # section indices far from the main job's S001…S006 (indices 0…5)


def simulate(kind: str, index: int, workdir: Path) -> Path:
    """Simulate (once, cached) one section of ``kind``; return its npz."""
    from em2fm.simulate import SimulationParams, simulate_section

    path = workdir / f"{kind.replace(', ', '-')}-{index}.npz"
    if not path.exists():
        params = SimulationParams.from_config(KINDS[kind])
        sim = simulate_section(params, index, seed=42)
        g = sim.fm_geometry_true
        io.save_npz(path, em=sim.em, fm=sim.fm, em_px=np.array(sim.em_geometry.pixel_size_m),
                    em_centre=np.array(sim.em_geometry.centre_m),
                    fm_px=np.array(g.pixel_size_m), fm_centre=np.array(g.centre_m),
                    fm_rot=np.array(g.rotation_rad))
    return path


def geometries(a: dict) -> tuple[ImageGeometry, ImageGeometry]:
    em = ImageGeometry(a["em"].shape, tuple(a["em_px"]), tuple(a["em_centre"]))
    fm = ImageGeometry(a["fm"].shape[-2:], tuple(a["fm_px"]), tuple(a["fm_centre"]),
                       float(a["fm_rot"]))
    return em, fm


def cases(n: int, seed: int) -> list[tuple[float, float, float, float]]:
    """``n`` misalignments (dx µm, dy µm, rotation °, scale error) covering the grid."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        shift = SHIFTS_UM[k % len(SHIFTS_UM)]
        rot = ROTATIONS_DEG[(k // len(SHIFTS_UM) + k) % len(ROTATIONS_DEG)]
        scale = SCALES[k % len(SCALES)]
        a = rng.uniform(0, 2 * math.pi)
        out.append((shift * math.cos(a), shift * math.sin(a),
                    rot * rng.choice([-1.0, 1.0]), scale))
    return out


def misplaced(fm_true: ImageGeometry, case: tuple[float, float, float, float]) -> ImageGeometry:
    """FM metadata off the truth by a shift (µm), rotation (°) and pixel-size error."""
    dx, dy, rot, scale = case
    return dataclasses.replace(
        fm_true, centre_m=(fm_true.centre_m[0] + dx * 1e-6, fm_true.centre_m[1] + dy * 1e-6),
        rotation_rad=fm_true.rotation_rad + math.radians(rot),
        pixel_size_m=tuple(p / (1 + scale) for p in fm_true.pixel_size_m))


_MODEL: dict = {}


def _model(path: str):
    if "model" not in _MODEL:
        import torch

        from em2fm.predict import load_model

        torch.set_num_threads(1)
        _MODEL["model"] = load_model(path, torch.device("cpu"))
    return _MODEL["model"]


def run_case(job: tuple[str, str, tuple, str]) -> dict:
    """Register one section under one misalignment by every method; errors in FM px."""
    from em2fm.register.steps import predict_for_registration

    kind, npz, case, model_path = job
    a = io.load_npz(npz)
    em_geom, fm_true = geometries(a)
    fm_meta = misplaced(fm_true, case)
    truth = moving_to_fixed_px(fm_true, em_geom)
    pts = em_field_fm_pixels(fm_true.shape_yx, truth, em_geom.shape_yx)
    checks = StatusParams()
    params = RegistrationParams()
    out: dict = {"kind": kind, "case": case}
    for name, variant in ALTERNATIVES.items():  # measured side by side, not used further
        t0 = time.perf_counter()
        alt = register_images(a["em"], em_geom, a["fm"][0], fm_meta,
                              dataclasses.replace(params, **variant))
        alt_status, _ = multimodal_status(alt.bound_violations, alt.warnings,
                                          alt.landscape.second_peak_ratio, checks)
        m = alt.fm_to_em_px_metadata if alt_status == "failed" else alt.fm_to_em_px
        out.update({name: rms_difference_px(m, truth, pts), f"{name}_status": alt_status,
                    f"{name}_s": time.perf_counter() - t0})
    t0 = time.perf_counter()
    mm = register_images(a["em"], em_geom, a["fm"][0], fm_meta, params)
    t_mm = time.perf_counter() - t0
    status, _ = multimodal_status(mm.bound_violations, mm.warnings,
                                  mm.landscape.second_peak_ratio, checks)
    meta_m = mm.fm_to_em_px_metadata
    after_mm = meta_m if status == "failed" else mm.fm_to_em_px
    out.update({"metadata": rms_difference_px(meta_m, truth, pts),
                "multimodal": rms_difference_px(after_mm, truth, pts),
                "multimodal_status": status, "multimodal_s": t_mm})
    model, ckpt = _model(model_path)
    ingest_meta = {"em": {"shape": list(a["em"].shape), "pixel_size_m": list(a["em_px"]),
                          "centre_m": list(a["em_centre"]), "rotation_rad": 0.0},
                   "fm": {"pixel_size_m": list(fm_meta.pixel_size_m)}}
    t0 = time.perf_counter()
    pred, target_to_em = predict_for_registration(a["em"], ingest_meta, model, ckpt, None)
    r = refine_to_prediction(a["fm"], pred, target_to_em, after_mm, meta_m, em_geom.shape_yx,
                             em_geom.pixel_size_m[0], params.capture)
    agreement = (rms_difference_px(r.candidate, mm.fm_to_em_px, pts)
                 if status != "failed" else None)
    status1, used, _ = refine_status(status, status, r.ncc_candidate,
                                     r.landscape.second_peak_ratio, r.bound_violations,
                                     agreement, checks, previous_confirmed=False,
                                     accepted=r.accepted)
    est = r.fm_to_em_px if used else after_mm
    est = meta_m if status1 == "failed" else est
    out.update({"round 1": rms_difference_px(est, truth, pts), "round 1_status": status1,
                "round 1_s": time.perf_counter() - t0})
    return out


def summarise(rows: list[dict], title: str) -> None:
    print(f"\n{title} ({len(rows)} cases)")
    print(f"  {'method':<12} {'median px':>9} {'p95 px':>7} {'silent':>7}  statuses"
          f"{'':<28} s/section")
    for method in METHODS:
        err = np.array([r[method] for r in rows])
        status = [r.get(f"{method}_status", "") for r in rows]
        silent = sum(e > 1 and s == "ok" for e, s in zip(err, status, strict=True))
        counts = ", ".join(f"{k} {status.count(k)}" for k in ("ok", "low_confidence", "failed")
                           if status.count(k)) if method != "metadata" else "-"
        secs = [r[f"{method}_s"] for r in rows] if method != "metadata" else [0.0]
        print(f"  {method:<12} {np.median(err):9.3f} {np.percentile(err, 95):7.3f} "
              f"{silent / len(rows):7.1%}  {counts:<36} {statistics.median(secs):6.1f}")


def sensitivity(model_path: str, npzs: list[Path]) -> None:
    """Test PCC of one fixed model against registration error injected on purpose."""
    from em2fm.metrics import pcc
    from em2fm.register.landscape import similarity_about
    from em2fm.register.steps import predict_for_registration
    from em2fm.tiles import registered_fm

    model, ckpt = _model(model_path)
    print("\nTest PCC against injected registration error (dense sections, mean of 4 "
          "directions; the prediction fixed, the measured FM placed by the truth + error)")
    names = [c["name"] for c in ckpt["channels"]]
    print(f"  {'error (FM px)':>13} " + " ".join(f"{n:>9}" for n in names))
    preds = []
    for npz in npzs:
        a = io.load_npz(npz)
        em_geom, fm_true = geometries(a)
        meta = {"em": {"shape": list(a["em"].shape), "pixel_size_m": list(a["em_px"]),
                       "centre_m": list(a["em_centre"]), "rotation_rad": 0.0},
                "fm": {"pixel_size_m": list(fm_true.pixel_size_m)}}
        pred, target_to_em = predict_for_registration(a["em"], meta, model, ckpt, None)
        preds.append((a, em_geom, fm_true, pred, target_to_em))
    for err in (0.0, 0.25, 0.5, 1.0, 2.0):
        vals = []
        for a, em_geom, fm_true, pred, target_to_em in preds:
            truth = moving_to_fixed_px(fm_true, em_geom)
            fm_px_em = fm_true.pixel_size_m[0] / em_geom.pixel_size_m[0]
            for ang in (0, 90, 180, 270):
                d = err * fm_px_em * np.array([math.cos(math.radians(ang)),
                                               math.sin(math.radians(ang))])
                wrong = similarity_about(np.zeros(2), d, 0.0, 1.0) @ truth
                fm = registered_fm(a["fm"], wrong, target_to_em, pred.shape[-2:])
                ok = np.all(np.isfinite(fm), axis=0)
                vals.append([pcc(pred[c][ok], fm[c][ok]) for c in range(pred.shape[0])])
        mean = np.mean(vals, axis=0)
        print(f"  {err:13.2f} " + " ".join(f"{v:9.3f}" for v in mean))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "results" / "model" / "model.pt"))
    ap.add_argument("--workdir", default=str(ROOT / ".tmp" / "bench-registration"))
    ap.add_argument("--sections", type=int, default=2, help="sections per kind")
    ap.add_argument("--cases", type=int, default=10, help="misalignments per section")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="1 section per kind, 5 cases")
    args = ap.parse_args()
    if args.quick:
        args.sections, args.cases = 1, 5
    if not Path(args.model).exists():
        sys.exit(f"{args.model} does not exist. Fix: run the main job first "
                 "(snakemake --cores 8 results/report.html) or pass --model PATH")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    specs = [(k, FIRST_INDEX + i) for k in KINDS for i in range(args.sections)]
    t0 = time.perf_counter()
    with Pool(args.processes) as pool:
        npzs = pool.starmap(simulate, [(k, i, work) for k, i in specs])
    print(f"simulated {len(npzs)} sections in {time.perf_counter() - t0:.0f} s")
    jobs = [(k, str(p), c, args.model) for (k, i), p in zip(specs, npzs, strict=True)
            for c in cases(args.cases, seed=i)]
    with Pool(args.processes) as pool:
        rows = pool.map(run_case, jobs, chunksize=1)
    capture = RegistrationParams().capture
    inside = [r for r in rows if max(abs(r["case"][0]), abs(r["case"][1]))
              < 0.95 * capture.max_shift_um
              and abs(r["case"][2]) < 0.95 * capture.max_rotation_deg]
    beyond = [r for r in rows if r not in inside]
    summarise(rows, "All cases")
    summarise(inside, f"Inside the capture range (±{capture.max_shift_um:g} µm per axis, "
                      f"±{capture.max_rotation_deg:g}°)")
    if beyond:
        summarise(beyond, "On or beyond the capture range (must never be a silent 'ok')")
    for kind in KINDS:
        summarise([r for r in inside if r["kind"] == kind], f"Inside the range, {kind}")
    sensitivity(args.model, [p for (k, _), p in zip(specs, npzs, strict=True)
                             if k == "dense"])


if __name__ == "__main__":
    main()
