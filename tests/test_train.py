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
