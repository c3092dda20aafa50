"""A trained model applied to new data (``--config model=PATH``).

The checkpoint of an earlier run (``results/model/model.pt``), or one a
colleague shared, carries what prediction needs: the network's architecture
(``model``: ``em_scale``, ``out_channels``, …), the FM channels it predicts
(``channels``: name, excitation_nm, emission_nm), the normalisation statistics
(``target_mean``, ``target_std``), its target pixel size
(``target_pixel_size_m``), the EM context (``margin``) and the training window
(``tile_size``), and what it was trained on (``train_sections``,
``val_sections``, ``step``, ``val_pcc_mean``, ``params``). :func:`model_card`
reads and checks these keys at start; :func:`apply_settings` makes the run use
the model's channels (matched by the wavelengths it was trained on) and its
grid (target pixel size, ``em_scale``), whatever the sections' FM pixel size.
"""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError
from .provenance import sha256 as file_sha256

#: Checkpoint keys prediction needs (written by ``train``).
REQUIRED_KEYS = ("model", "channels", "target_mean", "target_std", "target_pixel_size_m",
                 "margin", "state_dict")
#: Checkpoint keys copied to the card when present (what the model was trained on).
PROVENANCE_KEYS = ("train_sections", "val_sections", "excluded_sections", "step",
                   "val_pcc_mean", "val_pcc", "tile_size", "params")


def model_card(path: str | Path) -> dict:
    """What a checkpoint is and was trained on, checked for use (no weights).

    Returns:
        ``path`` (absolute), ``sha256``, ``bytes``, ``channels``, ``em_scale``,
        ``target_pixel_size_nm``, ``work_pixel_size_nm`` (EM input pixel, nm), ``margin``,
        ``architecture`` and the provenance keys found in the checkpoint.

    Raises:
        ConfigError: not a readable em2fm checkpoint, or inconsistent.
    """
    import torch

    p = Path(path)
    fix = ("Fix: pass the model.pt written by an em2fm run (results/model/model.pt), e.g. "
           "--config model=/path/to/model.pt")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file gets the same message
        # torch's own message advises weights_only=False (unsafe): name the error type only
        raise ConfigError(f"model {str(p)!r} is not a readable model checkpoint "
                          f"({type(exc).__name__}; it is loaded with weights_only=True, "
                          f"tensors and plain values only). {fix}") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"model {str(p)!r} is not an em2fm checkpoint (no metadata). {fix}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ConfigError(f"model {str(p)!r} lacks {missing}: not an em2fm checkpoint. {fix}")
    arch = dict(ckpt["model"])
    channels = [{k: c.get(k) for k in ("name", "excitation_nm", "emission_nm")}
                for c in ckpt["channels"]]
    n = len(channels)
    if not n or arch.get("out_channels", n) != n or len(ckpt["target_mean"]) != n:
        raise ConfigError(f"model {str(p)!r}: {n} channels, {arch.get('out_channels')} network "
                          f"outputs and {len(ckpt['target_mean'])} normalisation statistics "
                          f"do not agree. {fix}")
    nameless = [c for c in channels if not c["name"] or c["excitation_nm"] is None]
    if nameless:
        raise ConfigError(f"model {str(p)!r}: channel(s) {nameless} lack a name or an "
                          f"excitation wavelength, so they cannot be found in exports. {fix}")
    em_scale = int(arch.get("em_scale", 1))
    px_nm = float(ckpt["target_pixel_size_m"]) * 1e9
    if not px_nm > 0:
        raise ConfigError(f"model {str(p)!r}: target pixel size {px_nm} nm. {fix}")
    return {
        "path": str(p.resolve()), "sha256": file_sha256(p), "bytes": p.stat().st_size,
        "channels": channels, "em_scale": em_scale, "target_pixel_size_nm": px_nm,
        "work_pixel_size_nm": px_nm / em_scale, "margin": int(ckpt["margin"]),
        "architecture": arch,
        **{k: ckpt[k] for k in PROVENANCE_KEYS if k in ckpt},
    }


def apply_settings(config: dict, card: dict) -> dict:
    """The config keys a run applying the model uses: its channels, dyes and grid.

    ``channels`` become the model's (each matched in the exports by the wavelengths it was
    trained on, the ``dyes`` entries of those names replaced); ``tiles`` take the model's
    target pixel size, ``em_scale``, ``margin`` and training window, so every section is
    tiled and predicted on the model's grid.

    Raises:
        ConfigError: ``register.channel`` is not a channel of the model.
    """
    names = [c["name"] for c in card["channels"]]
    dyes = {**config["dyes"], **{c["name"]: {"excitation_nm": float(c["excitation_nm"]),
                                             "emission_nm": c["emission_nm"]}
                                 for c in card["channels"]}}
    reg = config["register"].get("channel")
    if reg is not None and reg not in names:
        raise ConfigError(f"register.channel {reg!r} is not a channel of the model "
                          f"{card['path']} ({names}). Fix: --config 'register={{channel: "
                          f"{names[0]}}}' or null")
    tiles = {**config["tiles"], "pixel_size_nm": card["target_pixel_size_nm"],
             "em_scale": card["em_scale"], "margin": card["margin"]}
    arch = card.get("architecture", {})
    if arch.get("depth") is not None:  # a model older than the computed context: raised to it
        from .receptive import DEFAULT_STEM, context_margin

        tiles["margin"] = max(int(card["margin"]), context_margin(
            int(arch["depth"]), int(card["em_scale"]), arch.get("stem", DEFAULT_STEM)))
    if card.get("tile_size"):
        tiles["tile_size"] = int(card["tile_size"])
    return {"channels": names, "dyes": dyes, "tiles": tiles}
