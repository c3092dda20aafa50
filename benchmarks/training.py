"""Training benchmarks on small simulated datasets: ablation, options, baseline, reproducibility.

    python benchmarks/training.py ablation      [--steps 120] [--only i]
    python benchmarks/training.py options       [--steps 120] [--only i]
    python benchmarks/training.py baseline      [--budget-min 5]
    python benchmarks/training.py reproducibility [--steps 30]

Sections are simulated with the package API (``em2fm.simulate``: ``--sections`` sections
of ``--em-size`` SEM px, default physics otherwise), ingested, and tiled with the TRUE
FM→EM transform (registration is not what is measured here). The first sections train,
the one before last validates (checkpoint choice), the last is the test section.
Datasets are cached in ``.tmp/bench-training/`` (delete it to simulate again).

- ``ablation`` (the reference finding): the same sections simulated with and without the
  aspecific RNA labelling of Hoechst (``hoechst_rna_fraction`` 0.25 / 0) and with and
  without Alexa 594 bleed-through into Hoechst (``hoechst_bleed_through`` 0.03 / 0), and
  each made stronger (RNA fraction 1.0, bleed-through 0.15); the
  model trained on each; PCC per channel on the test section against the measured FM,
  the noise-free FM and the specific label alone (what the dye is meant to mark), and the
  noise ceiling.
- ``options``: on the default data (per-section brightness CV 0.2), the default training
  beside one option changed at a time (FM per-section normalisation, EM z-score
  normalisation, signal-weighted windows, shift-tolerant loss).
- ``baseline``: at an equal budget of process CPU time (``time.process_time``, one
  thread, so load from other processes does not count), this model (AdamW, warm-up and
  cosine schedule over the spent fraction of the budget) against the usual label-free
  setup: a symmetric U-Net (depth 4, 32 base channels) on EM binned ×4 to the output grid,
  MSE, Adam 1e-3, EM and FM z-scored; the same U-Net again with config.yaml's
  normalisation and sampling (to separate architecture from data options); validation and
  test PCC per channel and training throughput.
- ``reproducibility``: the same short training repeated (same threads), with 2 threads,
  with another CPU kernel set (``ATEN_CPU_CAPABILITY=default`` instead of the CPU's
  AVX2 kernels, standing in for another CPU type), and killed with SIGKILL then resumed;
  largest weight difference and validation PCC difference to the first run.

Each prints one table (TSV-like, also written to ``benchmarks/tables/training_<part>.tsv``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _defaults  # noqa: E402

CACHE = ROOT / ".tmp" / "bench-training"
RESULTS = ROOT / "benchmarks" / "tables"
DYES = {"Hoechst": {"excitation_nm": 405, "emission_nm": 450},
        "Insulin": {"excitation_nm": 590, "emission_nm": 617}}
CHANNELS = [{"name": n, **d} for n, d in DYES.items()]
#: the baseline's PCC cells: (split, channel), validation first
SPLIT_CHANNELS = [(split, c) for split in ("val", "test") for c in DYES]

UNET, TILE, EM_SCALE = _defaults.network(), _defaults.tile_size(), _defaults.em_scale()


def _margin(unet: dict) -> int:
    """The EM context (target px) the workflow uses for ``unet``: its receptive field."""
    from em2fm.unet import UNetConfig

    return UNetConfig(em_scale=EM_SCALE, **unet).context_margin


MARGIN = _margin(UNET)

VARIANTS = {
    "aspecific + bleed-through (default)": {},
    "no aspecific RNA": {"hoechst_rna_fraction": 0.0},
    "no bleed-through": {"hoechst_bleed_through": 0.0},
    "neither": {"hoechst_rna_fraction": 0.0, "hoechst_bleed_through": 0.0},
    # dose: are the effects there at all, when stronger than the simulator's defaults?
    "aspecific RNA ×4 (fraction 1.0)": {"hoechst_rna_fraction": 1.0},
    "bleed-through ×5 (0.15)": {"hoechst_bleed_through": 0.15},
}


def dataset(physics: dict, n: int, em_size: int, seed: int = 42) -> Path:
    """Simulate, ingest and tile ``n`` sections (cached); return the folder."""
    from em2fm import ingest, io, simulate, tiles

    physics = {"em_size_px": em_size, **physics}
    key = "_".join(f"{k}={v}" for k, v in sorted(physics.items())) + f"_n{n}_seed{seed}"
    out = CACHE / key
    if (out / "done").exists():
        return out
    for i in range(n):
        s = f"S{i + 1:03d}"
        split = "train" if i < n - 2 else ("val" if i == n - 2 else "test")
        simulate.run(s, i, seed, physics, "gui", out / "raw" / s, out / "truth" / f"{s}.json",
                     out / "truth" / f"{s}.npz")
        ingest.run(out / "raw" / s, s, list(DYES), DYES, 20, None, out / "ingest" / f"{s}.json",
                   out / "ingest" / f"{s}.npz")
        truth = io.read_json(out / "truth" / f"{s}.json")
        reg = {"fm_to_em_px": truth["fm_to_em_px"], "status": "ok"}
        tiles.run(out / "ingest" / f"{s}.json", out / "ingest" / f"{s}.npz", _write(
            out / "reg" / f"{s}.json", reg), {"tile_size": TILE, "margin": MARGIN}, split,
            out / "tiles" / f"{s}.npz", out / "tiles" / f"{s}.json")
        _truth_on_grid(out, s)
    (out / "done").write_text("")
    return out


def _truth_on_grid(folder: Path, s: str) -> dict[str, np.ndarray]:
    """Section ``s``'s noise-free FM and its specific label alone (no aspecific binding, no
    bleed-through) on its target grid, from the simulator's truth (cached in ``tiles/``)."""
    from em2fm import io, tiles

    path = folder / "tiles" / f"{s}.clean.npz"
    if path.exists():
        cached = io.load_npz(path)
        if "fm_specific" in cached:
            return cached
    truth = io.read_json(folder / "truth" / f"{s}.json")
    arrays = io.load_npz(folder / "truth" / f"{s}.npz")
    meta = io.read_json(folder / "tiles" / f"{s}.json")
    out = {k: np.nan_to_num(tiles.registered_fm(
        arrays[k], np.asarray(truth["fm_to_em_px"]), np.asarray(meta["target_to_em_px"]),
        tuple(meta["target_shape"]))) for k in ("fm_clean", "fm_specific")}
    io.save_npz(path, **out)
    return out


def _write(path: Path, doc: dict) -> Path:
    from em2fm import io

    io.write_json(path, doc)
    return path


def _tiles(folder: Path, split: tuple[str, ...] = ("train", "val")) -> list[str]:
    from em2fm import io

    return [str(p) for p in sorted((folder / "tiles").glob("S*[0-9].npz"))
            if io.read_json(p.with_suffix(".json"))["split"] in split]


def _pcc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


def evaluate(model, ckpt_meta: dict, folder: Path, split: str) -> dict:
    """PCC per channel of a model on one split against measured, noise-free and
    specific-only FM (and the noise ceiling: noise-free against measured)."""
    import torch

    from em2fm import io
    from em2fm.predict import predict_work
    from em2fm.tiles import normalise_em

    out = {}
    for p in _tiles(folder, (split,)):
        arrays = io.load_npz(p)
        truth = _truth_on_grid(folder, Path(p).stem)
        clean = truth["fm_clean"]
        mask = arrays["mask"].astype(bool)
        em = normalise_em(arrays["em"], ckpt_meta.get("em_normalisation", "zscore"))
        model.eval()
        with torch.no_grad():
            pred, _ = predict_work(model, em, int(ckpt_meta["margin"]), window=96)
        for c, ch in enumerate(CHANNELS):
            n = ch["name"]
            out[f"{n}_pcc"] = _pcc(pred[c][mask], arrays["fm"][c][mask])
            out[f"{n}_pcc_clean"] = _pcc(pred[c][mask], clean[c][mask])
            out[f"{n}_pcc_specific"] = _pcc(pred[c][mask], truth["fm_specific"][c][mask])
            out[f"{n}_ceiling"] = _pcc(clean[c][mask], arrays["fm"][c][mask])
    return out


def train_steps(folder: Path, work: Path, steps: int, threads: int = 1, **settings) -> dict:
    """Train with the package (``em2fm.train``) for ``steps``; test metrics of the best."""
    import torch

    from em2fm.predict import load_model, set_threads
    from em2fm.train import TrainParams, train

    params = TrainParams(steps=steps, val_every=max(1, steps // 3), checkpoint_every=0,
                         device="cpu", **settings)
    t0 = time.process_time()
    best = train(_tiles(folder), UNET, params, TILE, MARGIN, CHANNELS, work / "model.pt",
                 work / "last.pt", work / "training.tsv", threads=threads,
                 card_path=work / "model.json")
    cpu = time.process_time() - t0
    set_threads(threads)
    model, ckpt = load_model(work / "model.pt", torch.device("cpu"))
    return {"best": best, "cpu_s": cpu, "test": evaluate(model, ckpt, folder, "test"),
            "val": evaluate(model, ckpt, folder, "val")}


def _reevaluated(result: dict, work: Path, folder: Path) -> dict:
    """``result`` with its best model's val and test metrics evaluated again (rewritten)."""
    import torch

    from em2fm.predict import load_model

    model, ckpt = load_model(work / "model.pt", torch.device("cpu"))
    result = {**result, "test": evaluate(model, ckpt, folder, "test"),
              "val": evaluate(model, ckpt, folder, "val")}
    (work / "result.json").write_text(json.dumps(result))
    return result


def _print_table(name: str, header: list[str], rows: list[list]) -> None:
    """Print ``rows`` and merge them into ``benchmarks/tables/training_{name}.tsv``.

    A row replaces the stored row of the same label (first column); the stored rows of
    other labels stay (a run of some ``--models`` does not drop the others), unless the
    stored header differs.
    """
    lines = ["\t".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r)
             for r in rows]
    print("\n".join(["\t".join(header), *lines]), flush=True)
    path = RESULTS / f"training_{name}.tsv"
    stored = path.read_text().splitlines() if path.exists() else []
    new = {line.split("\t", 1)[0]: line for line in lines}
    if stored[:1] == ["\t".join(header)]:
        kept = [new.pop(line.split("\t", 1)[0], line) for line in stored[1:]]
        lines = kept + list(new.values())
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["\t".join(header), *lines]) + "\n")


# ------------------------------------------------------------------------------ parts
def _cached(path: Path, compute) -> dict:
    """The result JSON at ``path``, computed (and written) if absent."""
    if path.exists():
        return json.loads(path.read_text())
    r = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r))
    return r


def _selected(items: dict, only: int | None) -> list[tuple[int, str]]:
    return [(i, k) for i, k in enumerate(items) if only is None or i == only]


def _tag(unet: dict) -> str:
    """A folder name for an architecture (``model`` settings)."""
    return "-".join(f"{k}{v}" for k, v in sorted(unet.items()))


def _runs(args) -> Path:
    """Cache folder of the runs of one protocol (architecture, steps, sections)."""
    return CACHE / "runs" / f"{_tag(UNET)}_steps{args.steps}_{args.sections}s"


def _over_seeds(args, folder: Path, name: str, **settings) -> list[dict]:
    """One training per seed of ``--seeds`` (cached)."""
    out = []
    for seed in args.seeds:
        work = _runs(args) / f"{name}-seed{seed}"
        out.append(_cached(work / "result.json", lambda w=work, sd=seed: train_steps(
            folder, w, args.steps, seed=sd, **settings)))
        if "Hoechst_pcc_specific" not in out[-1]["test"]:  # cached before that metric
            out[-1] = _reevaluated(out[-1], work, folder)
        print(name, seed, json.dumps(out[-1]["best"]), flush=True)
    return out


def _mean(results: list[dict], split: str, key: str) -> float:
    return float(np.mean([r[split][key] for r in results]))


def _range(results: list[dict], split: str, key: str) -> float:
    vals = [r[split][key] for r in results]
    return float(max(vals) - min(vals))


def part_ablation(args) -> None:
    rows = []
    for i, label in _selected(VARIANTS, args.only):
        folder = dataset(VARIANTS[label], args.sections, args.em_size)
        rs = _over_seeds(args, folder, f"variant-{i}")
        rows.append([label] + [_mean(rs, "test", f"{c}_{k}") for c in ("Hoechst", "Insulin")
                               for k in ("pcc", "pcc_clean", "pcc_specific", "ceiling")]
                    + [_range(rs, "test", f"{c}_pcc") for c in ("Hoechst", "Insulin")]
                    + [_mean(rs, "val", "Hoechst_pcc"), _mean(rs, "val", "Insulin_pcc")])
    _print_table("ablation" + ("" if args.only is None else f"_{args.only}"),
                 ["data", "Hoechst PCC", "Hoechst PCC vs noise-free",
                  "Hoechst PCC vs specific label", "Hoechst noise ceiling", "Insulin PCC",
                  "Insulin PCC vs noise-free", "Insulin PCC vs specific label",
                  "Insulin noise ceiling",
                  "Hoechst PCC range over seeds", "Insulin PCC range over seeds",
                  "val Hoechst PCC", "val Insulin PCC"], rows)


OPTIONS = {
    "defaults": {},
    "fm_normalisation: section": {"fm_normalisation": "section"},
    "em_normalisation: zscore (the default until Dec 2026)": {"em_normalisation": "zscore"},
    "window_sampling: signal": {"window_sampling": "signal"},
    "loss: shift_mse": {"loss": "shift_mse"},
}


def part_options(args) -> None:
    folder = dataset({}, args.sections, args.em_size)
    rows = []
    for i, label in _selected(OPTIONS, args.only):
        # "defaults" is the ablation's default-data run (same data, settings and seeds)
        rs = _over_seeds(args, folder, "variant-0" if i == 0 else f"option-{i}",
                         **OPTIONS[label])
        rows.append([label, _mean(rs, "val", "Hoechst_pcc"), _mean(rs, "val", "Insulin_pcc"),
                     _mean(rs, "test", "Hoechst_pcc"), _mean(rs, "test", "Insulin_pcc"),
                     (_mean(rs, "test", "Hoechst_pcc") + _mean(rs, "test", "Insulin_pcc")) / 2,
                     _range(rs, "test", "Hoechst_pcc"), _range(rs, "test", "Insulin_pcc"),
                     float(np.mean([r["cpu_s"] for r in rs]))])
    _print_table("options" + ("" if args.only is None else f"_{args.only}"),
                 ["training", "val Hoechst", "val Insulin", "test Hoechst", "test Insulin",
                  "test mean", "test Hoechst range over seeds",
                  "test Insulin range over seeds", "CPU s"], rows)


def _fit_budget(model, opt, scheduled: bool, sampler, margin: int, budget_s: float,
                batch: int) -> dict:
    """Train until ``budget_s`` of process CPU time is spent; return steps and time.

    ``scheduled``: the learning rate follows this model's schedule (linear warm-up over
    ``WARMUP_FRACTION``, then cosine to 0) over the spent fraction of the CPU budget, so it
    reaches 0 when the budget does; otherwise it stays constant (the baseline's Adam)."""
    from em2fm.train import WARMUP_FRACTION, cosine_decay, window_loss

    base = [g["lr"] for g in opt.param_groups]
    model.train()
    t0 = time.process_time()
    steps = 0
    while (spent := time.process_time() - t0) < budget_s:
        if scheduled:
            f = min(1.0, (spent + 1e-9) / (WARMUP_FRACTION * budget_s)) * cosine_decay(
                spent, budget_s)
            for g, lr in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr * f
        x, y = sampler.batch(batch)
        loss = window_loss(model(x), y, margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    return {"steps": steps, "cpu_s": time.process_time() - t0}


BASELINE = "symmetric U-Net baseline (d4, b32, binned EM, MSE, Adam 1e-3)"
BASELINE_CONFIG = "symmetric U-Net baseline, config.yaml's normalisation and sampling"
#: the usual label-free data setup of the baseline: one z-score per section and channel
USUAL_DATA = {"fm_normalisation": "global", "em_normalisation": "zscore",
              "window_sampling": "uniform"}
SYMMETRIC = _defaults.symmetric_baseline()
MODELS = {  # rows of the baseline comparison: this model's architectures, then the baseline
    "this model, config.yaml": UNET,
    "this model, stem blocks b16 d4 (until Dec 2026)": {"stem": "blocks", "base_channels": 16,
                                                       "max_channels": 128, "depth": 4},
    "this model, stem patch b4 d4": {"stem": "patch", "base_channels": 4, "max_channels": 128,
                                     "depth": 4},
    "this model, stem patch b8 d4": {"stem": "patch", "base_channels": 8, "max_channels": 128,
                                     "depth": 4},
    "this model, stem patch b4 d5": {"stem": "patch", "base_channels": 4, "max_channels": 128,
                                     "depth": 5},
    "this model, stem patch b8 d5": {"stem": "patch", "base_channels": 8, "max_channels": 128,
                                     "depth": 5},
    BASELINE: None,
    BASELINE_CONFIG: None,  # separates the architecture from the data options
}


def _data_options(kind: str) -> dict:
    """Normalisation and sampling of a row: the baseline's usual ones or config.yaml's."""
    return USUAL_DATA if kind == BASELINE else _defaults.train_data_options()


def _baseline_tag(kind: str) -> str:
    """Cache folder name of a baseline row (its architecture and data options)."""
    data = _data_options(kind)
    return _tag({**MODELS[kind], **data}) if MODELS[kind] else (
        "symmetric" if kind == BASELINE else "symmetric-" + _tag(data))


def _setup(kind: str, folder: Path, seed: int = 42, tile: int = TILE,
           weight_decay: float | None = None, learning_rate: float | None = None):
    import torch

    from em2fm.tiles import normalise_em
    from em2fm.train import (
        TrainParams,
        WindowSampler,
        load_sections,
        make_optimiser,
        normalisation,
    )
    from em2fm.unet import SymmetricUNet, UNetConfig, build

    torch.manual_seed(seed)
    unet = MODELS[kind]
    margin = _margin(unet) if unet else 8
    opts = _data_options(kind)
    sections = load_sections(_tiles(folder), tile)
    for s in sections:
        s.em = normalise_em(s.em, opts["em_normalisation"])
    norm = normalisation(sections, opts["fm_normalisation"], opts["em_normalisation"])
    train_s = [s for s in sections if s.split == "train"]
    sampler = WindowSampler(train_s, tile, margin, EM_SCALE, norm.mean, norm.std, seed,
                            targets=[norm.target(s) for s in train_s],
                            sampling=opts["window_sampling"])
    if unet:
        model = build(UNetConfig(out_channels=2, em_scale=EM_SCALE, **unet))
        train = _defaults.config()["train"]  # config.yaml's optimiser (scheduled by _fit_budget)
        opt, _ = make_optimiser(model, TrainParams(
            learning_rate=train["learning_rate"] if learning_rate is None else learning_rate,
            weight_decay=train["weight_decay"] if weight_decay is None else weight_decay))
    else:
        model = SymmetricUNet(out_channels=2, **SYMMETRIC)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, opt, sampler, margin, norm


def _prediction_context(kind: str) -> int:
    """EM context (target px) a row's model is evaluated with: its receptive field."""
    from em2fm.unet import SymmetricUNetConfig

    return _margin(MODELS[kind]) if MODELS[kind] else SymmetricUNetConfig(
        **SYMMETRIC).context_margin


def _baseline_run(kind: str, folder: Path, args, seed: int, work: Path) -> dict:
    import torch

    from em2fm.unet import n_parameters

    model, opt, sampler, margin, norm = _setup(kind, folder, seed, args.tile,
                                               args.weight_decay, args.learning_rate)
    fit = _fit_budget(model, opt, MODELS[kind] is not None, sampler, margin,
                      args.budget_min * 60, args.batch)
    meta = {"margin": margin, "em_normalisation": norm.em}
    work.mkdir(parents=True, exist_ok=True)  # the weights, to evaluate again
    torch.save({"state_dict": model.state_dict(), **meta}, work / "weights.pt")
    return {"fit": fit, "parameters": n_parameters(model), "margin": margin,
            "val": evaluate(model, meta, folder, "val"),
            "test": evaluate(model, meta, folder, "test")}


def _variant(args, unet: bool = True) -> str:
    """The settings of a baseline row that differ from config.yaml, as a name suffix
    (``-tile64-lr0.01``; empty for the defaults). The learning rate and weight decay are this
    model's (``unet``); the symmetric U-Net keeps its Adam 1e-3 (only the tile applies)."""
    changed = {"tile": None if args.tile == TILE else args.tile,
               "wd": args.weight_decay if unet else None,
               "lr": args.learning_rate if unet else None}
    return "".join(f"-{k}{v:g}" for k, v in changed.items() if v is not None)


def _budget_runs(args, variant: str) -> Path:
    """Cache folder of a row's baseline runs under one protocol (budget, sections, the row's
    :func:`_variant`; ``-p2``: this model's schedule follows the spent CPU time; before Dec 7
    2026 it followed a step count estimated from the first 3 steps, which ended it early)."""
    return CACHE / "runs" / f"budget{args.budget_min:g}min-{args.sections}s-p2{variant}"


def _paired(rows: dict[str, list[dict]], seeds: list[int]) -> list[list]:
    """Each row's PCC minus the symmetric U-Net's, seed by seed (same seed: same data order
    and initialisation seed): mean ± standard error over the seeds, and the seeds it wins."""
    out = []
    for label, rs in rows.items():
        cells = []
        for split, c in SPLIT_CHANNELS:
            d = np.array([r[split][f"{c}_pcc"] - b[split][f"{c}_pcc"]
                          for r, b in zip(rs, rows[BASELINE], strict=True)])
            sem = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            cells.append(f"{d.mean():+.3f} ± {sem:.3f} ({int((d > 0).sum())}/{len(d)})")
        if label != BASELINE:
            out.append([label, " ".join(map(str, seeds)), *cells])
    return out


def part_baseline(args) -> None:
    from em2fm.predict import set_threads

    set_threads(1)
    folder = dataset({}, args.sections, args.em_size)
    rows, results = [], {}
    for i, kind in _selected(MODELS, args.only):
        if args.models is not None and i not in args.models:
            continue
        variant = _variant(args, MODELS[kind] is not None)
        rs = []
        for seed in args.seeds:  # seed 42's runs keep their folder from before --seeds
            work = _budget_runs(args, variant) / (_baseline_tag(kind)
                                                  + ("" if seed == 42 else f"-seed{seed}"))
            rs.append(_cached(work / "result.json",
                              lambda k=kind, sd=seed, w=work: _baseline_run(k, folder, args,
                                                                            sd, w)))
            print(kind, seed, rs[-1]["fit"], flush=True)
        fits = [r["fit"] for r in rs]
        label = kind + (f" ({variant[1:]})" if variant else "")
        results[label if kind != BASELINE else BASELINE] = rs
        rows.append([label, " ".join(map(str, args.seeds)), rs[0]["parameters"], rs[0]["margin"],
                     _prediction_context(kind),
                     float(np.mean([f["steps"] for f in fits])),
                     float(np.mean([f["steps"] * args.batch / f["cpu_s"] for f in fits])),
                     *[_mean(rs, split, f"{c}_pcc") for split, c in SPLIT_CHANNELS],
                     (_mean(rs, "test", "Hoechst_pcc") + _mean(rs, "test", "Insulin_pcc")) / 2,
                     *[_range(rs, split, f"{c}_pcc") for split, c in SPLIT_CHANNELS]])
    if args.only is None:
        _print_table(f"baseline_{args.budget_min:g}min{_variant(args)}",
                     ["model", "seeds", "parameters", "training context (target px)",
                      "prediction context (target px)", "steps",
                      "windows per CPU s", "val Hoechst PCC", "val Insulin PCC",
                      "test Hoechst PCC", "test Insulin PCC", "test mean PCC",
                      "val Hoechst range over seeds", "val Insulin range over seeds",
                      "test Hoechst range over seeds", "test Insulin range over seeds"], rows)
        if BASELINE in results and len(results) > 1:
            _print_table(f"baseline_{args.budget_min:g}min{_variant(args)}-paired",
                         ["model", "seeds", *[f"{split} {c} PCC minus the U-Net's (wins)"
                                              for split, c in SPLIT_CHANNELS]],
                         _paired(results, args.seeds))


_REPRO_CHILD = """
import os, signal, sys
sys.path.insert(0, {src!r})
from pathlib import Path
from em2fm.train import TrainParams, train
kill_at = {kill_at}
def hook(step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
out = Path({out!r})
train({tiles!r}, {unet!r}, TrainParams(steps={steps}, val_every={steps}, device="cpu",
      checkpoint_every={every}), {tile}, {margin}, {channels!r}, out / "model.pt",
      out / "last.pt", out / "training.tsv", threads={threads}, step_hook=hook)
"""


def _repro_run(folder: Path, out: Path, steps: int, threads: int, env: dict | None = None,
               kill_at: int = -1) -> subprocess.CompletedProcess:
    code = _REPRO_CHILD.format(src=str(ROOT / "src"), kill_at=kill_at, out=str(out),
                               tiles=_tiles(folder), unet=UNET, steps=steps,
                               every=max(1, steps // 3), tile=TILE, margin=MARGIN,
                               channels=CHANNELS, threads=threads)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def part_reproducibility(args) -> None:
    import shutil

    import torch

    folder = dataset({}, args.sections, args.em_size)
    runs = {
        "reference (1 thread)": ({}, 1, -1),
        "same again": ({}, 1, -1),
        "killed at 2/3 (SIGKILL), resumed": ({}, 1, 2 * args.steps // 3 + 1),
        "2 threads": ({}, 2, -1),
        "ATEN_CPU_CAPABILITY=default (no AVX2 kernels)": ({"ATEN_CPU_CAPABILITY": "default"},
                                                          1, -1),
    }
    rows, ref = [], None
    for i, (label, (env, threads, kill_at)) in enumerate(runs.items()):
        out = CACHE / "runs" / f"repro{args.steps}-{i}"
        if not (out / "last.pt").exists():  # cached: delete the folder to train again
            shutil.rmtree(out, ignore_errors=True)
            p = _repro_run(folder, out, args.steps, threads, env, kill_at)
            if kill_at > 0:
                assert p.returncode == -9, p.stderr[-2000:]
                p = _repro_run(folder, out, args.steps, threads, env)
            if p.returncode:
                raise RuntimeError(p.stderr[-3000:])
        last = torch.load(out / "last.pt", weights_only=True)
        best = torch.load(out / "model.pt", weights_only=True)
        if ref is None:
            ref = (last, best)
        w, w0 = last["state_dict"], ref[0]["state_dict"]
        same = all(torch.equal(w[k], w0[k]) for k in w)
        weights = [k for k in w if not k.endswith(("running_mean", "running_var",
                                                   "num_batches_tracked"))]
        rel = max(float((w[k].double() - w0[k].double()).abs().max()
                        / w0[k].double().abs().max()) for k in weights)
        rows.append([label, "yes" if same else "no", f"{rel:.2g}",
                     *[f"{best['val_pcc'][c]:.4f}" for c in ("Hoechst", "Insulin")],
                     *[f"{best['val_pcc'][c] - ref[1]['val_pcc'][c]:+.1e}"
                       for c in ("Hoechst", "Insulin")]])
        print(label, rows[-1], flush=True)
    _print_table("reproducibility", ["run", "weights bitwise equal",
                                     "max |Δweight| / max |weight| (per tensor)",
                                     "val Hoechst PCC", "val Insulin PCC", "Δ Hoechst",
                                     "Δ Insulin"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=["ablation", "options", "baseline", "reproducibility"])
    ap.add_argument("--sections", type=int, default=4, help="sections (≥ 3)")
    ap.add_argument("--em-size", type=int, default=1280, help="SEM px per section side")
    ap.add_argument("--steps", type=int, default=120, help="training steps per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42],
                    help="training seeds (table: mean, and range over them)")
    ap.add_argument("--budget-min", type=float, default=5.0, help="baseline: CPU minutes")
    ap.add_argument("--batch", type=int, default=_defaults.config()["train"]["batch_size"],
                    help="baseline: windows per step (default: train.batch_size)")
    ap.add_argument("--tile", type=int, default=TILE,
                    help="baseline: training window edge without context (target px; runs "
                    "before this option were at 32)")
    ap.add_argument("--weight-decay", type=float, default=None,
                    help="baseline: AdamW weight decay of this model's rows (default: "
                    "train.weight_decay)")
    ap.add_argument("--learning-rate", type=float, default=None,
                    help="baseline: peak learning rate of this model's rows (default: "
                    "train.learning_rate)")
    ap.add_argument("--models", type=int, nargs="*", default=None,
                    help="baseline: rows of MODELS to run (default: all)")
    ap.add_argument("--only", type=int, default=None,
                    help="ablation/options/baseline: run only this row (results cached; run in "
                    "parallel processes, then once without --only to print the table)")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from em2fm.predict import set_threads

    set_threads(1)
    {"ablation": part_ablation, "options": part_options, "baseline": part_baseline,
     "reproducibility": part_reproducibility}[args.part](args)


if __name__ == "__main__":
    main()
