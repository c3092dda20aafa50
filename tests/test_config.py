"""The shipped config validates against its schema; command-line strings are coerced."""

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from em2fm.config import ConfigError, check, coerce_to_schema, load_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "schemas" / "config.schema.yaml")


def test_shipped_config_is_valid():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(config)


def _keys(node) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


def test_no_thread_or_memory_keys_in_config():
    keys = _keys(yaml.safe_load((ROOT / "config.yaml").read_text()))
    for key in keys:
        assert not re.fullmatch(r"threads|cores|jobs|mem(ory|_mb|_gb)?|runtime|resources",
                                key), key


def test_command_line_strings_are_coerced():
    # what `--config 'dyes={GFP: {excitation_nm: 488}}' tiles={em_scale: 8}` gives
    cli = {"dyes": {"GFP": {"excitation_nm": "488"}}, "tiles": {"em_scale": "8"},
           "predict": {"test_time_augmentation": "false"}, "raw_dir": "/data/001",
           "split": {"test": ["001"]}, "register": {"channel": "null"}}
    out = coerce_to_schema(cli, SCHEMA)
    assert out["dyes"]["GFP"]["excitation_nm"] == 488
    assert out["tiles"]["em_scale"] == 8
    assert out["predict"]["test_time_augmentation"] is False
    assert out["raw_dir"] == "/data/001"  # strings stay strings
    assert out["split"]["test"] == ["001"]
    assert out["register"]["channel"] is None


def test_bad_values_still_fail_validation():
    out = coerce_to_schema({"tiles": {"em_scale": "three"}}, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(out)


def _valid_config() -> dict:
    import copy

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(config)
    return copy.deepcopy(config)


@pytest.mark.parametrize(
    ("edit", "match"),
    [(lambda c: c.update(channels=["GFP"]), "not in the dyes catalogue"),
     (lambda c: c["register"].update(channel="Insulin2"), "register.channel"),
     (lambda c: c["model"].update(depth=1), "too shallow"),
     (lambda c: c["tiles"].update(tile_size=30), "not a multiple")],
)
def test_cross_key_checks(edit, match):
    config = _valid_config()
    check(config)  # the shipped config passes
    edit(config)
    with pytest.raises(ConfigError, match=match):
        check(config)


def test_simulate_params_default_to_the_dataclass():
    from em2fm.simulate.params import SimulationParams

    params = yaml.safe_load((ROOT / "config.yaml").read_text())["simulate"]["params"]
    assert params == {}  # one source of truth: SimulationParams
    assert SimulationParams.from_config(params) == SimulationParams()
    assert not (ROOT / "schemas" / "simulate.schema.yaml").exists()


def test_simulate_params_command_line_strings_are_coerced():
    # what `--config 'simulate={params: {em_size_px: 2048, em_invert: true}}'` gives
    cli = {"simulate": {"params": {"em_size_px": "2048", "em_invert": "true",
                                   "em_dwell_time_s": "1e-6", "hoechst_channel_name": "DAPI"}}}
    out = coerce_to_schema(cli, SCHEMA)["simulate"]["params"]
    assert out == {"em_size_px": 2048, "em_invert": True, "em_dwell_time_s": 1e-6,
                   "hoechst_channel_name": "DAPI"}
    assert isinstance(out["em_size_px"], int)
    config = _valid_config()
    config["simulate"]["params"] = out
    check(config)


def test_simulate_params_unknown_key_is_named():
    config = _valid_config()
    config["simulate"]["params"] = {"em_pixel_size_um": 0.01}
    with pytest.raises(ConfigError, match=r"em_pixel_size_um.*em_pixel_size_nm.*em2fm\.simulate"):
        check(config)


@pytest.mark.parametrize(("params", "match"), [
    ({"em_size_px": "abc"}, r"simulate\.params\.em_size_px.*integer"),
    ({"em_size_px": 20}, r"simulate\.params\.em_size_px.*minimum 64"),
    ({"fm_size_px": 128}, "cannot hold the SEM field"),  # the dataclass's cross-key check
])
def test_simulate_params_bad_values_are_named(params, match):
    config = _valid_config()
    config["simulate"]["params"] = coerce_to_schema({"simulate": {"params": params}},
                                                    SCHEMA)["simulate"]["params"]
    with pytest.raises(ConfigError, match=match):
        check(config)
