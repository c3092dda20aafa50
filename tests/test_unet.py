import pytest
import torch

from em2fm.unet import UNetConfig, build


@pytest.mark.parametrize(("em_scale", "depth", "n_up"), [(4, 4, 2), (8, 5, 2), (1, 2, 2)])
def test_output_is_on_the_fm_grid(em_scale, depth, n_up):
    cfg = UNetConfig(out_channels=3, base_channels=4, depth=depth, em_scale=em_scale)
    net = build(cfg)
    assert cfg.n_up == n_up
    x = torch.randn(2, 1, 2**depth * 3, 2**depth * 2)
    y = net(x)
    assert y.shape == (2, 3, x.shape[2] // em_scale, x.shape[3] // em_scale)


def test_contraction_longer_than_expansion():
    net = build(UNetConfig(depth=4, em_scale=4))
    assert len(net.encoder) == 5 and len(net.decoder) == 2


def test_rejects_bad_sizes_and_configs():
    net = build(UNetConfig(base_channels=2, depth=3, em_scale=4))
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.randn(1, 1, 12, 16))
    with pytest.raises(ValueError, match="power of 2"):
        build(UNetConfig(em_scale=3))
    with pytest.raises(ValueError, match="at least"):
        build(UNetConfig(depth=1, em_scale=8))


def test_gradients_flow_to_every_parameter():
    net = build(UNetConfig(base_channels=2, depth=3, em_scale=2))
    net(torch.randn(2, 1, 16, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
