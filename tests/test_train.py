import numpy as np
import torch

from em2fm.train import TrainParams, WindowSampler, load_sections, target_statistics


def test_training_outputs(mini_run):
    model = mini_run["root"] / "model"
    lines = (model / "training.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:5] == ["step", "elapsed_s", "lr", "train_loss", "val_loss"]
    assert "val_pcc_Hoechst" in header
    assert len(lines) == 1 + 60  # one row per step
    ckpt = torch.load(model / "model.pt", weights_only=True)  # loads without pickle
    assert ckpt["channels"][0]["name"] == "Hoechst"
    assert len(ckpt["target_mean"]) == 1 and ckpt["target_std"][0] > 0
    assert ckpt["model"]["em_scale"] == 4 and ckpt["margin"] == 12  # receptive field
    assert ckpt["train_sections"] == ["S1"] and ckpt["val_sections"] == ["S2"]
    assert torch.load(model / "last.pt", weights_only=True)["step"] == 60


def test_training_learns(mini_run):
    best = mini_run["best"]
    assert best["val_pcc_mean"] > 0.5, best
    lines = (mini_run["root"] / "model" / "training.tsv").read_text().splitlines()
    losses = [float(ln.split("\t")[3]) for ln in lines[1:]]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_sampler_windows_and_augmentation(mini_run):
    sections = load_sections([mini_run["root"] / "tiles" / "S1.npz"], 16)
    mean, std = target_statistics(sections)
    s = WindowSampler(sections, 16, 4, 4, mean, std, seed=1)
    x, y = s.batch(5)
    assert x.shape == (5, 1, (16 + 8) * 4, (16 + 8) * 4) and y.shape == (5, 1, 16, 16)
    x2, _ = WindowSampler(sections, 16, 4, 4, mean, std, seed=1).batch(5)
    assert torch.equal(x, x2)  # seeded


def test_same_seed_same_model(mini_run, tmp_path):
    from em2fm import train

    root = mini_run["root"]
    args = ([str(root / "tiles" / "S1.npz"), str(root / "tiles" / "S2.npz")],
            {"base_channels": 2, "max_channels": 4, "depth": 3}, TrainParams(steps=5, batch_size=2,
                                                                           val_every=5),
            16, 4, [{"name": "Hoechst", "excitation_nm": 405, "emission_nm": 450}])
    a = train.train(*args, tmp_path / "a.pt", tmp_path / "al.pt", tmp_path / "a.tsv", threads=1)
    b = train.train(*args, tmp_path / "b.pt", tmp_path / "bl.pt", tmp_path / "b.tsv", threads=1)
    assert a == b
    sa = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    sb = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------ resume, card, fallback
TINY = {"base_channels": 2, "max_channels": 4, "depth": 3}
HOECHST = [{"name": "Hoechst", "excitation_nm": 405, "emission_nm": 450}]


def _tiny_args(root, **settings):
    params = TrainParams(**{"steps": 12, "batch_size": 2, "val_every": 4,
                            "checkpoint_every": 3, **settings})
    return ([str(root / "tiles" / "S1.npz"), str(root / "tiles" / "S2.npz")], TINY, params,
            16, 4, HOECHST)


_CHILD = """
import os, signal, sys
sys.path.insert(0, {src!r})
from pathlib import Path
from em2fm.train import TrainParams, train
out = Path({out!r})
def hook(step):
    lines = (out / "t.tsv").read_text().splitlines()
    assert len(lines) == step + 1, (step, len(lines))  # the TSV grows as training goes
    if step == {kill_at}:
        os.kill(os.getpid(), signal.{sig})
train({tiles!r}, {unet!r}, TrainParams(**{params!r}), 16, 4, {channels!r}, out / "m.pt",
      out / "l.pt", out / "t.tsv", threads=1, card_path=out / "m.json", step_hook=hook)
"""


def _child(root, out, kill_at, sig):
    import subprocess
    import sys
    from dataclasses import asdict
    from pathlib import Path

    tiles, unet, params, _, _, channels = _tiny_args(root)
    code = _CHILD.format(src=str(Path(__file__).parents[1] / "src"), out=str(out),
                         kill_at=kill_at, sig=sig, tiles=tiles, unet=unet,
                         params=asdict(params), channels=channels)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_resume_after_kill_is_bitwise_identical(mini_run, tmp_path):
    from em2fm import train

    root = mini_run["root"]
    ref = tmp_path / "ref"
    best_ref = train.train(*_tiny_args(root), ref / "m.pt", ref / "l.pt", ref / "t.tsv",
                           threads=1, card_path=ref / "m.json")
    assert not (ref / "checkpoint").exists()  # removed when done

    out = tmp_path / "run"
    killed = _child(root, out, kill_at=7, sig="SIGKILL")  # kill -9 after step 7
    assert killed.returncode == -9, killed.stderr
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=True)
    assert state["step"] == 6  # the last periodic checkpoint
    assert {"model", "optimizer", "scheduler", "sampler_rng", "torch_rng", "rows",
            "best_state_dict"} <= set(state)
    termed = _child(root, out, kill_at=10, sig="SIGTERM")  # resumes, then a time limit
    assert termed.returncode == 128 + 15, termed.stderr
    # the signal lands during step 11 (after the hook of step 10): saved at its end
    assert torch.load(out / "checkpoint" / "state.pt", weights_only=True)["step"] == 11
    (out / "m.pt").unlink()  # Snakemake deletes declared outputs before the rerun
    (out / "t.tsv").unlink()
    best = train.train(*_tiny_args(root), out / "m.pt", out / "l.pt", out / "t.tsv",
                       threads=1, card_path=out / "m.json")
    assert best == best_ref
    for name in ("m.pt", "l.pt"):
        a = torch.load(ref / name, weights_only=True)["state_dict"]
        b = torch.load(out / name, weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    cols = [[ln.split("\t")[i] for i in (0, 2, 3, 4, 5)]
            for ln in (ref / "t.tsv").read_text().splitlines()]
    assert cols == [[ln.split("\t")[i] for i in (0, 2, 3, 4, 5)]
                    for ln in (out / "t.tsv").read_text().splitlines()]
    card = __import__("json").loads((out / "m.json").read_text())
    assert card["training"]["resumes"] == 2
    assert card["training"]["resumed_from_steps"] == [6, 11]
    assert not (out / "checkpoint").exists()


def test_stale_resume_state_is_ignored(mini_run, tmp_path, caplog):
    from em2fm import train

    root = mini_run["root"]
    (tmp_path / "checkpoint").mkdir()
    torch.save({"fingerprint": "other", "step": 5}, tmp_path / "checkpoint" / "state.pt")
    train.train(*_tiny_args(root, steps=2), tmp_path / "m.pt", tmp_path / "l.pt",
                tmp_path / "t.tsv")
    assert "other inputs or settings" in caplog.text
    assert len((tmp_path / "t.tsv").read_text().splitlines()) == 3


def test_overfits_one_window_pair(mini_run):
    from em2fm.train import window_loss
    from em2fm.unet import UNetConfig, build

    sections = load_sections([mini_run["root"] / "tiles" / "S1.npz"], 16)
    mean, std = target_statistics(sections)
    x, y = WindowSampler(sections, 16, 4, 4, mean, std, seed=3).batch(1)
    torch.manual_seed(0)
    net = build(UNetConfig(out_channels=1, base_channels=4, max_channels=16, depth=3))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for _ in range(20):
        loss = window_loss(net(x), y, 4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, losses


def test_shift_loss_forgives_a_one_pixel_shift():
    from em2fm.train import window_loss

    y = torch.randn(2, 1, 8, 8)
    out = torch.randn(2, 1, 16, 16)
    out[:, :, 5:13, 4:12] = y  # prediction 1 px down of the target
    assert window_loss(out, y, 4, "shift_mse", 1).item() < 1e-12
    assert window_loss(out, y, 4, "mse").item() > 0.5


def test_no_validation_section_warns_or_stops(mini_run, tmp_path, caplog):
    import json

    import pytest

    from em2fm import train

    root = mini_run["root"]
    args = ([str(root / "tiles" / "S1.npz")], TINY, TrainParams(steps=2, batch_size=2,
                                                                val_every=2), 16, 4, HOECHST)
    train.train(*args, tmp_path / "m.pt", tmp_path / "l.pt", tmp_path / "t.tsv",
                card_path=tmp_path / "m.json")
    assert "no validation section" in caplog.text
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["validation"]["on_training_data"] is True
    assert any("no validation section" in w for w in card["warnings"])
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ckpt["validation_on_training_data"] and ckpt["warnings"]
    strict = (args[0], TINY, TrainParams(steps=2, missing_validation="error"), 16, 4, HOECHST)
    with pytest.raises(ValueError, match="no validation section"):
        train.train(*strict, tmp_path / "m2.pt", tmp_path / "l2.pt", tmp_path / "t2.tsv")


def test_model_card_fields(mini_run, tmp_path):
    import json

    from em2fm import train

    root = mini_run["root"]
    train.train(*_tiny_args(root, steps=4, fm_normalisation="section",
                            em_normalisation="percentile", window_sampling="signal",
                            loss="shift_mse"),
                tmp_path / "m.pt", tmp_path / "l.pt", tmp_path / "t.tsv",
                card_path=tmp_path / "m.json")
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["architecture"]["name"] == "AsymmetricUNet"
    assert card["architecture"]["depth"] == 3 and card["n_parameters"] > 100
    assert card["input"]["pixel_size_nm"] * 4 == pytest_approx(card["output"]["pixel_size_nm"])
    assert card["output"]["channels"][0]["name"] == "Hoechst"
    assert card["data"]["train_sections"] == ["S1"] and card["data"]["val_sections"] == ["S2"]
    assert card["normalisation"]["fm_normalisation"] == "section"
    assert card["normalisation"]["em_normalisation"] == "percentile"
    assert set(card["normalisation"]["fm_section_background"]) == {"S1", "S2"}
    assert card["training"]["device"] == "cpu" and card["training"]["time_s"] >= 0
    assert card["validation"]["on_training_data"] is False
    assert 0 < card["validation"]["pcc_mean"] <= 1 or card["validation"]["pcc_mean"] < 1
    assert {"torch", "numpy", "python", "em2fm"} <= set(card["software"])
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert ckpt["fm_normalisation"] == "section" and ckpt["em_normalisation"] == "percentile"
    assert ckpt["fm_reference_range"][0] > 0


def pytest_approx(v):
    import pytest

    return pytest.approx(v, rel=1e-9)


def test_section_normalisation_removes_brightness(mini_run):
    from dataclasses import replace

    from em2fm.train import normalisation

    (a,) = load_sections([mini_run["root"] / "tiles" / "S1.npz"], 16)
    b = replace(a, name="S1x3", fm=a.fm * 3 + 50)  # the same section, 3× brighter on a higher floor
    norm = normalisation([a, b], "section")
    assert np.allclose(norm.target(a), norm.target(b), atol=1e-4)
    assert not np.allclose(normalisation([a, b], "global").target(a),
                           normalisation([a, b], "global").target(b))
