import pytest
import torch

from em2fm.unet import UNetConfig, build


@pytest.mark.parametrize("stem", ["blocks", "patch"])
@pytest.mark.parametrize(("em_scale", "depth", "n_up"), [(4, 4, 2), (8, 5, 2), (1, 2, 2)])
def test_output_is_on_the_fm_grid(em_scale, depth, n_up, stem):
    cfg = UNetConfig(out_channels=3, base_channels=4, depth=depth, em_scale=em_scale, stem=stem)
    net = build(cfg)
    assert cfg.n_up == n_up
    x = torch.randn(2, 1, 2**depth * 3, 2**depth * 2)
    y = net(x)
    assert y.shape == (2, 3, x.shape[2] // em_scale, x.shape[3] // em_scale)


def test_contraction_longer_than_expansion():
    net = build(UNetConfig(depth=4, em_scale=4))
    assert len(net.encoder) == 5 and len(net.decoder) == 2


def test_patch_stem_sees_every_em_pixel_of_its_block_with_its_own_weight():
    net = build(UNetConfig(base_channels=2, depth=3, em_scale=4, stem="patch"))
    assert len(net.encoder) == 2 and len(net.decoder) == 1  # levels 2, 3; one expansion
    conv = net.stem[0]
    assert conv.kernel_size == (4, 4) and conv.stride == (4, 4) and conv.out_channels == 8
    net.eval()
    x = torch.zeros(1, 1, 64, 64)
    y0 = net(x)
    x[0, 0, 33, 34] = 5.0  # one EM px changes the output of its own target px
    assert (net(x) - y0)[0, 0, 8, 8].abs() > 0


def test_rejects_bad_sizes_and_configs():
    net = build(UNetConfig(base_channels=2, depth=3, em_scale=4))
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.randn(1, 1, 12, 16))
    with pytest.raises(ValueError, match="power of 2"):
        build(UNetConfig(em_scale=3))
    with pytest.raises(ValueError, match="at least"):
        build(UNetConfig(depth=1, em_scale=8))
    with pytest.raises(ValueError, match="stem"):
        build(UNetConfig(stem="pixels"))


@pytest.mark.parametrize("stem", ["blocks", "patch"])
def test_gradients_flow_to_every_parameter(stem):
    net = build(UNetConfig(base_channels=2, depth=3, em_scale=2, stem=stem))
    net(torch.randn(2, 1, 16, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_symmetric_baseline_bins_then_mirrors():
    from em2fm.unet import SymmetricUNet, n_parameters

    net = SymmetricUNet(out_channels=2, depth=4, base_channels=32, em_scale=4)
    assert net.cfg.multiple == 64 and net.cfg.n_up == 4
    assert len(net.encoder) == 5 and len(net.decoder) == 4
    assert n_parameters(net) > 7_000_000  # widths 32…512, no cap
    small = SymmetricUNet(out_channels=3, depth=2, base_channels=4, em_scale=4)
    y = small(torch.randn(2, 1, 64, 32))
    assert y.shape == (2, 3, 16, 8)
    with pytest.raises(ValueError, match="multiple of 16"):
        small(torch.randn(1, 1, 24, 32))
