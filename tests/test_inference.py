import platform

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from em2fm.inference import (
    ArraySource,
    InferenceSettings,
    WindowedPredictor,
    amp_dtype,
    blend_weights,
    is_out_of_memory,
    keep_freed_memory,
    model_margin,
    predict_array,
    reflect_index,
)
from em2fm.receptive import (
    context_margin,
    input_interval,
    receptive_radius_em,
    resolve_margin,
    symmetric_context_margin,
    window_period,
)
from em2fm.unet import SymmetricUNet, UNetConfig, build


def _positive_net(cfg: UNetConfig) -> nn.Module:
    """A network whose every path is positive: its gradient support is its receptive field."""
    net = build(cfg).eval()
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.Conv2d):
                mod.weight.fill_(1.0 / mod.weight[0].numel())
                if mod.bias is not None:
                    mod.bias.zero_()
    return net


@pytest.mark.parametrize("stem", ["blocks", "patch"])
@pytest.mark.parametrize(("depth", "em_scale"), [(3, 4), (4, 4), (2, 2), (3, 8), (5, 4)])
def test_receptive_field_matches_the_impulse_response(depth, em_scale, stem, monkeypatch):
    # avg pooling has max pooling's support but passes gradient to all four inputs
    monkeypatch.setattr(F, "max_pool2d", F.avg_pool2d)
    cfg = UNetConfig(out_channels=1, base_channels=2, max_channels=4, depth=depth,
                     em_scale=em_scale, stem=stem)
    net = _positive_net(cfg)
    size = 2 ** depth * 32
    x = torch.ones(1, 1, size, size, requires_grad=True)
    out = net(x)
    centre = out.shape[-1] // 2
    for phase in range(window_period(depth, em_scale)):
        if x.grad is not None:
            x.grad = None
        net(x)[0, 0, centre, centre + phase].backward()
        cols = np.flatnonzero(x.grad[0, 0].abs().sum(0).numpy())
        lo, hi = input_interval(depth, em_scale, centre + phase, stem)
        assert (cols.min(), cols.max()) == (lo, hi)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_symmetric_baseline_context_covers_its_impulse_response(depth, monkeypatch):
    """The symmetric U-Net baseline's receptive field (binned EM, then a full U-Net) is far
    wider than this model's: ±107 target px at depth 4; its context covers it exactly."""
    monkeypatch.setattr(F, "max_pool2d", F.avg_pool2d)  # the same support, gradient to all
    net = SymmetricUNet(out_channels=1, depth=depth, base_channels=2, em_scale=4).eval()
    with torch.no_grad():  # every path positive: the gradient support is the field
        for mod in net.modules():
            if isinstance(mod, nn.Conv2d | nn.ConvTranspose2d):
                mod.weight.fill_(1.0 / mod.weight[0].numel())
    n = 2**depth * (16 if depth < 4 else 20)
    x = torch.ones(1, 1, 4 * n, 4 * n, requires_grad=True)
    reach = 0
    for phase in range(2**depth):
        x.grad = None
        o = n // 2 + phase
        net(x)[0, 0, o, o].backward()
        cols = np.flatnonzero(x.grad[0, 0].abs().sum(0).numpy()) // 4
        reach = max(reach, o - cols.min(), cols.max() - o)
    m = symmetric_context_margin(depth)
    assert m - 2 ** (depth - 1) < reach <= m and (2 * m) % 2**depth == 0
    assert model_margin(net) == m  # what windowed prediction of the baseline uses
    if depth == 4:
        assert (reach, m) == (107, 112)


def test_default_receptive_field_is_about_27_target_px():
    assert receptive_radius_em(4, 4) == 110  # EM px, i.e. 27.5 target px
    assert context_margin(4, 4) == 28
    assert receptive_radius_em(4, 4, "patch") == 104  # the default stem: 26 target px
    assert context_margin(4, 4, "patch") == 26
    assert ((32 + 2 * context_margin(4, 4)) * 4) % 16 == 0
    for depth, s in [(3, 4), (5, 8), (4, 1), (4, 2)]:
        m = context_margin(depth, s)
        assert m * s >= receptive_radius_em(depth, s) and (2 * m * s) % 2**depth == 0


def test_input_outside_the_receptive_field_changes_nothing():
    cfg = UNetConfig(out_channels=2, base_channels=4, max_channels=8, depth=3, em_scale=4)
    net = build(cfg).eval()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(1, 1, 256, 256)).astype(np.float32))
    i = 32
    lo, hi = input_interval(3, 4, i)
    y = x.clone()
    y[..., :, : lo] += 5.0
    y[..., :, hi + 1:] -= 5.0
    with torch.no_grad():
        assert torch.equal(net(x)[..., i], net(y)[..., i])
        z = x.clone()
        z[..., :, hi] += 5.0  # the edge of the field does count
        assert not torch.equal(net(x)[..., i], net(z)[..., i])


def test_resolve_margin():
    assert resolve_margin(None, 4, 4) == 28
    assert resolve_margin(40, 4, 4) == 40
    with pytest.raises(ValueError, match="receptive field"):
        resolve_margin(4, 4, 4)


@pytest.mark.parametrize("overlap", [0, 8])
def test_butted_or_blended_windows_equal_the_whole_image(overlap):
    torch.manual_seed(0)
    cfg = UNetConfig(out_channels=2, base_channels=4, max_channels=8, depth=3, em_scale=4)
    net = build(cfg).eval()
    em = np.random.default_rng(1).normal(size=(4 * 70, 4 * 90)).astype(np.float32)
    m = context_margin(3, 4)
    whole, _ = predict_array(net, em, m, InferenceSettings(window=128))
    tiled, _ = predict_array(net, em, m, InferenceSettings(window=16, overlap=overlap,
                                                           batch=3))
    assert whole.shape == (2, 70, 90)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)  # float32 rounding only
    # the old 4 px of context is not enough: windows disagree (100× the rounding)
    naive, _ = predict_array(net, em, 4, InferenceSettings(window=16))
    assert np.abs(naive - whole).max() > 1e-4


class PoolModel(nn.Module):
    """A fake network: the mean of each em_scale² block (exactly linear, equivariant)."""

    def __init__(self, em_scale: int = 4, depth: int = 3, offset: float = 0.0) -> None:
        super().__init__()
        self.cfg = UNetConfig(out_channels=1, em_scale=em_scale, depth=depth)
        self.w = nn.Parameter(torch.ones(()))
        self.offset = offset
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return F.avg_pool2d(x, self.cfg.em_scale) * self.w + self.offset


@pytest.mark.parametrize("overlap", [0, 4, 10])
def test_blending_is_exact_for_a_constant_and_a_linear_model(overlap):
    h, w, s = 50, 37, 4
    yy, xx = np.mgrid[0: h * s, 0: w * s].astype(np.float64)
    em = (0.3 * yy - 0.7 * xx + 2.0).astype(np.float32)
    pred, std = predict_array(PoolModel(), em, 2, InferenceSettings(window=12, overlap=overlap,
                                                                  tta=True))
    ty, tx = np.mgrid[0:h, 0:w] * s + (s - 1) / 2
    np.testing.assert_allclose(pred[0], 0.3 * ty - 0.7 * tx + 2.0, atol=1e-3)
    assert std is not None and std.max() < 1e-2  # the pooling commutes with flips
    const, _ = predict_array(PoolModel(offset=3.0), np.zeros_like(em), 2,
                             InferenceSettings(window=12, overlap=overlap))
    np.testing.assert_allclose(const, 3.0, atol=1e-6)


def test_blend_weights():
    w = blend_weights(16, 4, first=False, last=False)
    assert w.min() > 0 and w[4:12].tolist() == [1.0] * 8
    np.testing.assert_allclose(w[:4] + w[12:], 1.0)  # neighbours' ramps sum to one
    assert blend_weights(16, 4, first=True, last=True).tolist() == [1.0] * 16


class OOMModel(PoolModel):
    def __init__(self, max_batch: int, message: str = "CUDA out of memory") -> None:
        super().__init__()
        self.max_batch, self.message = max_batch, message

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.max_batch:
            raise RuntimeError(self.message)
        return super().forward(x)


def test_out_of_memory_halves_the_batch_and_goes_on():
    em = np.random.default_rng(0).normal(size=(4 * 40, 4 * 40)).astype(np.float32)
    ref, _ = predict_array(PoolModel(), em, 2, InferenceSettings(window=8, batch=16))
    model = OOMModel(max_batch=3)  # the predictor runs a copy: pred.model
    pred = WindowedPredictor(model, 2, InferenceSettings(window=8, batch=16))
    out, _ = pred.predict(ArraySource(em))
    assert pred.batch == 2 and max(pred.model.calls[-3:]) <= 2
    np.testing.assert_array_equal(out, ref)
    with pytest.raises(RuntimeError, match="out of memory"):
        WindowedPredictor(OOMModel(max_batch=0), 2, InferenceSettings(window=8)).predict(em)
    with pytest.raises(RuntimeError, match="shape"):
        WindowedPredictor(OOMModel(0, "bad shape"), 2, InferenceSettings(window=8)).predict(em)


def test_out_of_memory_recognised():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_half_precision_only_on_cuda():
    assert amp_dtype(torch.device("cpu")) is None
    assert amp_dtype(torch.device("cuda")) is torch.float16
    assert amp_dtype(torch.device("cuda"), amp=False) is None


def test_reflect_index_matches_numpy_pad():
    a = np.arange(7)
    idx = reflect_index(np.arange(-5, 12), 7)
    np.testing.assert_array_equal(a[idx], np.pad(a, 5, mode="reflect")[:17])


def test_automatic_batch_fits_the_device():
    from em2fm.inference import auto_batch

    assert auto_batch(torch.device("cpu"), 288) >= 8  # small windows batch on a CPU
    assert auto_batch(torch.device("cpu"), 2000) == 1
    assert auto_batch(torch.device("cuda"), 736) > auto_batch(torch.device("cpu"), 736)


def test_fused_batchnorm_gives_the_same_prediction():
    from em2fm.inference import fuse_batchnorm

    torch.manual_seed(0)
    net = build(UNetConfig(out_channels=2, base_channels=4, max_channels=8, depth=3))
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):  # non-trivial statistics
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 2)
    net.eval()
    fused = fuse_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is kept
    x = torch.randn(2, 1, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), atol=1e-5, rtol=1e-5)
    assert fuse_batchnorm(net.train()) is net  # training mode: nothing folded


def test_predictor_runs_a_channels_last_copy_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = build(UNetConfig(out_channels=2, base_channels=4, depth=4, em_scale=4)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    em = np.random.default_rng(1).normal(size=(4 * 96, 4 * 96)).astype(np.float32)
    out, _ = WindowedPredictor(model, 26, InferenceSettings(window=32, fuse=False)).predict(em)
    assert all(p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    x = torch.from_numpy(np.pad(em, 26 * 4, mode="reflect"))[None, None]
    with torch.no_grad():
        whole = model(x)[0, :, 26:-26, 26:-26].numpy()
    np.testing.assert_allclose(out, whole, atol=1e-4)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_is_kept_on_glibc():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent
