"""The defaults of config.yaml that benchmarks measure: one source of truth."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def config() -> dict:
    """config.yaml as a dict."""
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def network() -> dict:
    """The ``model`` section of config.yaml without ``path``: UNetConfig keyword arguments."""
    return {k: v for k, v in config()["model"].items() if k != "path"}


def tile_size() -> int:
    """``tiles.tile_size`` (target px)."""
    return int(config()["tiles"]["tile_size"])


def em_scale() -> int:
    """``tiles.em_scale`` (EM work px per target px)."""
    return int(config()["tiles"]["em_scale"])


def predict_window() -> int:
    """``predict.window`` (target px per inference window)."""
    return int(config()["predict"]["window"])


#: ``train`` options of config.yaml that change the data the network sees
DATA_OPTIONS = ("fm_normalisation", "em_normalisation", "window_sampling")


def train_data_options() -> dict:
    """config.yaml's ``train`` normalisation and window sampling (TrainParams keywords)."""
    train = config()["train"]
    return {k: train[k] for k in DATA_OPTIONS}


def symmetric_baseline() -> dict:
    """The symmetric U-Net baseline both benchmarks compare with (``em2fm.unet.SymmetricUNet``
    keywords): depth 4, 32 base channels, on EM binned to config.yaml's target grid."""
    return {"depth": 4, "base_channels": 32, "em_scale": em_scale()}
