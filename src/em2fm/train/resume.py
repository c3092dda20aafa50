"""Resume state of a training run: where it lives, what it holds, when it is stale."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import io
from ..provenance import sha256
from .data import WindowSampler

if TYPE_CHECKING:
    from .fit import TrainParams

log = logging.getLogger(__name__)


def checkpoint_dir_for(model_path: str | Path) -> Path:
    """Where the resume state of a training run lives: ``checkpoint/`` beside model.pt.

    Not a declared output of the rule (Snakemake deletes those before a rerun), and keyed
    off the output path, so a registration round's model resumes from its own folder.
    """
    return Path(model_path).parent / "checkpoint"


def run_fingerprint(tiles_npz: list[str | Path], unet: dict, params: TrainParams,
                    tile_size: int, margin: int, channels: list[dict]) -> str:
    """Hash of everything that determines the training (inputs' content included).

    A resume state with another fingerprint is stale and ignored. ``checkpoint_every``
    and ``device`` do not enter it (a job may resume on another node).
    """
    settings = {k: v for k, v in asdict(params).items()
                if k not in ("checkpoint_every", "device")}
    doc = {"settings": settings, "unet": unet, "tile_size": tile_size, "margin": margin,
           "channels": channels,
           "inputs": [[Path(p).name, sha256(p),
                       sha256(Path(p).with_suffix(".json"))] for p in tiles_npz]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class RunState:
    """Mutable state of one training run (what a resume checkpoint holds)."""

    step: int = 0
    elapsed_s: float = 0.0
    rows: list[str] | None = None
    best: dict | None = None
    best_state: dict | None = None
    resumes: int = 0
    resumed_from: list[int] | None = None


def cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_state(path: Path, fingerprint: str, run: RunState, model, opt, sched,
                sampler: WindowSampler, threads: int) -> None:
    state = {
        "fingerprint": fingerprint, "step": run.step, "elapsed_s": run.elapsed_s,
        "rows": list(run.rows or []), "best": run.best, "best_state_dict": run.best_state,
        "resumes": run.resumes, "resumed_from": list(run.resumed_from or []),
        "threads": threads, "model": cpu_state(model), "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "sampler_rng": sampler.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, fingerprint: str) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file: start again rather than fail
        log.warning("resume state %s unreadable (%s): training starts from step 0", path, err)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("resume state %s belongs to other inputs or settings: ignored, training "
                    "starts from step 0", path)
        return None
    return state


