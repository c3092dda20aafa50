import pytest
import torch

from em2fm.config import ConfigError
from em2fm.pretrained import apply_settings, file_sha256, model_card


def test_model_card_reads_what_prediction_needs(mini_run):
    path = mini_run["root"] / "model" / "model.pt"
    card = model_card(path)
    assert card["sha256"] == file_sha256(path) and len(card["sha256"]) == 64
    assert [c["name"] for c in card["channels"]] == ["Hoechst"]
    assert card["em_scale"] == 4 and card["target_pixel_size_nm"] == pytest.approx(100.0)
    assert card["work_pixel_size_nm"] == pytest.approx(25.0)
    assert card["train_sections"] == ["S1"] and card["val_sections"] == ["S2"]
    assert "state_dict" not in card


def test_apply_settings_use_the_models_channels_and_grid(mini_run):
    card = model_card(mini_run["root"] / "model" / "model.pt")
    cfg = {"channels": ["Hoechst", "Insulin"], "dyes": {"Insulin": {"excitation_nm": 590}},
           "register": {"channel": None},
           "tiles": {"pixel_size_nm": None, "em_scale": 2, "tile_size": 32, "margin": 2}}
    out = apply_settings(cfg, card)
    assert out["channels"] == ["Hoechst"]
    assert out["dyes"]["Hoechst"]["excitation_nm"] == 405 and "Insulin" in out["dyes"]
    from em2fm.receptive import context_margin

    need = context_margin(card["architecture"]["depth"], 4)  # the model's receptive field
    assert out["tiles"] == {"pixel_size_nm": pytest.approx(100.0), "em_scale": 4,
                            "tile_size": 16, "margin": max(card["margin"], need)}
    old = apply_settings(cfg, {**card, "margin": 2})  # a model trained with less context
    assert old["tiles"]["margin"] == need
    with pytest.raises(ConfigError, match=r"register.channel 'Insulin' is not a channel"):
        apply_settings({**cfg, "register": {"channel": "Insulin"}}, card)


def test_a_file_that_is_not_a_model_gets_one_clear_error(tmp_path, mini_run):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"not a readable model checkpoint.*Fix:"):
        model_card(bad)
    ckpt = torch.load(mini_run["root"] / "model" / "model.pt", weights_only=True)
    del ckpt["target_pixel_size_m"]
    torch.save(ckpt, bad)
    with pytest.raises(ConfigError, match=r"lacks \['target_pixel_size_m'\]"):
        model_card(bad)
    ckpt = torch.load(mini_run["root"] / "model" / "model.pt", weights_only=True)
    ckpt["channels"] = ckpt["channels"] * 2
    torch.save(ckpt, bad)
    with pytest.raises(ConfigError, match="2 channels, 1 network outputs"):
        model_card(bad)
