"""Configuration helpers used at workflow start (rules/common.smk).

``snakemake --config key=value`` parses values with YAML's BaseLoader, so every
scalar arrives as a string (``dyes={GFP: {excitation_nm: 488}}`` gives
``"488"``). :func:`coerce_to_schema` converts such strings to the types the
JSON schema asks for, before validation, so the command line works like the
config file (``null`` becomes None wherever the schema allows null).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and the fix."""


_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}
_NULL = {"null", "none", "~", ""}


def load_schema(path: str | Path) -> dict:
    """Load a YAML/JSON schema, inlining local ``$ref`` files (relative paths)."""
    path = Path(path)
    schema = yaml.safe_load(path.read_text())
    return _inline_refs(schema, path.parent)


def _inline_refs(node: Any, base: Path) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return load_schema(base / ref)
        return {k: _inline_refs(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, base) for v in node]
    return node


def _types(schema: dict) -> list[str]:
    t = schema.get("type")
    if t is None and "enum" in schema:
        return sorted({_json_type(v) for v in schema["enum"]})
    return [t] if isinstance(t, str) else list(t or [])


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _coerce_scalar(value: str, types: list[str]) -> Any:
    text = value.strip()
    if "null" in types and text.lower() in _NULL:
        return None
    if "boolean" in types and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    if "integer" in types:
        try:
            return int(text)
        except ValueError:
            pass
    if "number" in types:
        try:
            return float(text)
        except ValueError:
            pass
    return value


def coerce_to_schema(value: Any, schema: dict) -> Any:
    """Return ``value`` with string scalars converted to the schema's types.

    Strings stay strings where the schema allows a string; anything that cannot
    be converted is left as is, so validation reports it.
    """
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for k, v in value.items():
            sub = props.get(k, extra if isinstance(extra, dict) else {})
            out[k] = coerce_to_schema(v, sub)
        return out
    if isinstance(value, list):
        items = schema.get("items", {})
        return [coerce_to_schema(v, items if isinstance(items, dict) else {}) for v in value]
    if isinstance(value, str):
        types = _types(schema)
        if "null" in types and value.strip().lower() in _NULL - {""}:
            return None  # `key=null` on the command line means null, as in YAML
        if types and "string" not in types:
            return _coerce_scalar(value, types)
    return value


def check(config: dict) -> None:
    """Cross-key checks the JSON schema cannot express; raise ConfigError with the fix."""
    unknown = [c for c in config["channels"] if c not in config["dyes"]]
    if unknown:
        raise ConfigError(
            f"channels {unknown} are not in the dyes catalogue {sorted(config['dyes'])}. "
            f"Fix: add them, e.g. --config 'dyes={{{unknown[0]}: {{excitation_nm: 488}}}}'"
        )
    reg = config["register"].get("channel")
    if reg is not None and reg not in config["channels"]:
        raise ConfigError(f"register.channel {reg!r} is not one of channels "
                          f"{config['channels']}. Fix: choose one of them, or null")
    scale = int(config["tiles"]["em_scale"])
    depth = int(config["model"]["depth"])
    if 2**depth < scale:
        raise ConfigError(f"model.depth {depth} is too shallow for tiles.em_scale {scale}: "
                          f"the network must contract at least log2(em_scale) times. "
                          f"Fix: set model.depth ≥ {scale.bit_length() - 1}")
    window = (int(config["tiles"]["tile_size"]) + 2 * int(config["tiles"]["margin"])) * scale
    if window % 2**depth:
        raise ConfigError(
            f"(tiles.tile_size + 2·tiles.margin)·tiles.em_scale = {window} EM px is not a "
            f"multiple of 2**model.depth = {2**depth}. Fix: change tiles.tile_size or "
            "tiles.margin (e.g. tile_size 32, margin 4 with em_scale 4 and depth 4)")
