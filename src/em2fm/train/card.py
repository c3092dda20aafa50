"""The model card: what the network is, what it saw, how it was trained."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch

from ..unet import describe, n_parameters
from .data import Normalisation


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def software_versions() -> dict:
    """Versions of the software that shaped the weights."""
    import sys

    from .. import __version__

    return {"em2fm": __version__, "python": sys.version.split()[0],
            "torch": torch.__version__, "numpy": np.__version__,
            "cuda": torch.version.cuda, "platform": platform.platform()}


def model_card(meta: dict, model: torch.nn.Module, norm: Normalisation, summary: dict) -> dict:
    """The model card (results/model/model.json): what the network is and what it saw."""
    cfg = meta["model"]
    target_px = float(meta["target_pixel_size_m"])
    return {
        "architecture": {
            "name": type(model).__name__,
            "description": describe(cfg),
            **cfg,
        },
        "n_parameters": n_parameters(model),
        "input": {"channels": ["EM (backscattered electrons)"],
                  "pixel_size_nm": target_px / cfg["em_scale"] * 1e9,
                  "context_margin_target_px": meta["margin"],
                  "normalisation": meta["em_normalisation"]},
        "output": {"channels": meta["channels"], "pixel_size_nm": target_px * 1e9,
                   "units": "FM camera counts (ADU) of the training data"
                   + (", a typical training section's brightness"
                      if meta["fm_normalisation"] == "section" else "")},
        "normalisation": {k: meta[k] for k in meta if k.startswith(("fm_", "em_"))
                          or k in ("target_mean", "target_std")},
        "data": {"train_sections": meta["train_sections"],
                 "val_sections": meta["val_sections"],
                 "excluded_sections": meta["excluded_sections"],
                 "tile_size_target_px": meta["tile_size"],
                 "windows_seen": summary["steps"] * meta["params"]["batch_size"]},
        "training": {"settings": meta["params"], "steps": summary["steps"],
                     "best_step": summary["best"]["step"],
                     "time_s": round(summary["elapsed_s"], 1),
                     "device": summary["device"], "threads": summary["threads"],
                     "cpu": _cpu_name(), "resumes": summary["resumes"],
                     "resumed_from_steps": summary["resumed_from"]},
        "validation": {"pcc": summary["best"].get("val_pcc", {}),
                       "pcc_mean": summary["best"]["val_pcc_mean"],
                       "sections": meta["val_sections"],
                       "on_training_data": meta["validation_on_training_data"]},
        "warnings": meta["warnings"],
        "reproducibility": ("bitwise identical for the same inputs, config, seed, software "
                            "versions, device and thread count; other thread counts or CPU "
                            "types change the weights at the float rounding level (README)"),
        "software": software_versions(),
    }


