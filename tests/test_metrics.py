import math

import numpy as np
import pytest

from em2fm.metrics import bootstrap_ci, local_pcc_map, nrmse, pcc, r2, ssim


def _blobs(rng, n=64):
    from scipy import ndimage

    return ndimage.gaussian_filter(rng.normal(size=(n, n)), 2) * 10 + 5


def test_pcc_r2_nrmse_basics():
    a = np.arange(10.0)
    assert pcc(a, 2 * a + 1) == pytest.approx(1)
    assert math.isnan(pcc(a, np.ones(10)))
    assert r2(a, a) == 1
    assert nrmse(a, a) == 0
    # a constant at the mean: RMSE = std; the range of 0..9 (0.1-99.9 %) is about 9
    assert nrmse(np.full(10, a.mean()), a) == pytest.approx(a.std() / np.ptp(a), rel=0.01)
    assert math.isnan(nrmse(a, np.ones(10)))  # no range: undefined, not infinite
    with pytest.raises(ValueError, match="differ in size"):
        pcc(a, a[:5])


def test_ssim_perfect_noisy_and_masked(rng):
    y = _blobs(rng)
    mask = np.ones(y.shape, bool)
    assert ssim(y, y, mask) == pytest.approx(1)
    noisy = y + rng.normal(0, 1.0, y.shape)
    worse = y + rng.normal(0, 3.0, y.shape)
    assert 0 < ssim(worse, y, mask) < ssim(noisy, y, mask) < 1
    # garbage outside the mask does not count
    mask[:, 40:] = False
    spoiled = y.copy()
    spoiled[:, 40:] = 1e6
    assert ssim(spoiled, y, mask) == pytest.approx(1)
    assert math.isnan(ssim(y, y, np.zeros(y.shape, bool)))


def test_local_pcc_map_finds_the_failing_region(rng):
    y = _blobs(rng, 96)
    x = y.copy()
    x[:, 48:] = _blobs(np.random.default_rng(99), 96)[:, 48:]  # right half: unrelated
    mask = np.ones(y.shape, bool)
    mask[:10] = False
    m = local_pcc_map(x, y, mask, 15)
    assert np.nanmean(m[20:, :30]) > 0.99
    assert abs(np.nanmean(m[20:, 66:])) < 0.5
    assert np.isnan(m[:2]).all()  # windows mostly outside the mask
    assert m.shape == y.shape and np.nanmax(m) <= 1


def test_bootstrap_ci():
    mean, lo, hi = bootstrap_ci([0.5, 0.6, 0.7, 0.8, float("nan")])
    assert mean == pytest.approx(0.65) and 0.5 <= lo < mean < hi <= 0.8
    assert bootstrap_ci([0.5, 0.6]) == bootstrap_ci([0.5, 0.6])  # seeded
    m1, lo1, hi1 = bootstrap_ci([0.7])
    assert m1 == 0.7 and math.isnan(lo1) and math.isnan(hi1)  # one section: no interval
    assert all(math.isnan(v) for v in bootstrap_ci([]))
