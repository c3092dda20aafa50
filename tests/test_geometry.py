import math

import numpy as np
import pytest

from em2fm.geometry import (
    ImageGeometry,
    apply_affine,
    geometry_from_meta,
    moving_to_fixed_px,
    scale_matrix,
    smooth_resample,
    warp,
)


def test_centre_pixel_maps_to_centre_position():
    g = ImageGeometry((4, 6), (1e-7, 1e-7), (1e-3, 2e-3), rotation_rad=0.3)
    centre = apply_affine(g.pixel_to_stage(), np.array([2.5, 1.5]))
    np.testing.assert_allclose(centre, [1e-3, 2e-3], atol=1e-15)


def test_rows_go_down_and_stage_y_goes_up():
    g = ImageGeometry((10, 10), (2e-7, 2e-7), (0.0, 0.0))
    top, bottom = apply_affine(g.pixel_to_stage(), np.array([[4.5, 0.0], [4.5, 9.0]]))
    assert top[1] > bottom[1]
    assert top[1] - bottom[1] == pytest.approx(9 * 2e-7)


def test_rotation_is_counter_clockwise_in_the_stage_frame():
    g = ImageGeometry((3, 3), (1.0, 1.0), (0.0, 0.0), rotation_rad=math.pi / 2)
    # one pixel to the right of the centre turns to one pixel up (CCW)
    p = apply_affine(g.pixel_to_stage(), np.array([2.0, 1.0]))
    np.testing.assert_allclose(p, [0.0, 1.0], atol=1e-12)


def test_image_edges_match_odemis_bounding_box():
    # Odemis: bounding box = centre ± shape · pixel size / 2
    g = ImageGeometry((8, 16), (5e-9, 5e-9), (1e-3, 1e-3))
    left_edge = apply_affine(g.pixel_to_stage(), np.array([-0.5, 3.5]))[0]
    assert left_edge == pytest.approx(1e-3 - 16 * 5e-9 / 2, abs=1e-15)


def test_moving_to_fixed_round_trip():
    fm = ImageGeometry((100, 120), (1e-7, 1e-7), (1e-3 + 4e-7, 2e-3), rotation_rad=0.1)
    em = ImageGeometry((2000, 2000), (1e-8, 1e-8), (1e-3, 2e-3))
    m = moving_to_fixed_px(fm, em)
    pts = np.array([[0.0, 0.0], [50.0, 60.0]])
    back = apply_affine(np.linalg.inv(m), apply_affine(m, pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # scale 10 and rotation: lengths grow tenfold
    d = apply_affine(m, pts[1]) - apply_affine(m, pts[0])
    assert np.hypot(*d) == pytest.approx(10 * np.hypot(50, 60))


def test_scale_matrix_maps_block_centres():
    m = scale_matrix(4)
    np.testing.assert_allclose(apply_affine(m, np.array([0.0, 1.0])), [1.5, 5.5])


def test_smooth_resample_block_mean():
    img = np.arange(16, dtype=float).reshape(4, 4)
    out, to_in = smooth_resample(img, 2, sigma_px=0)
    np.testing.assert_allclose(out, [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_allclose(to_in, scale_matrix(2))


def test_warp_shift_and_outside_is_nan():
    img = np.zeros((20, 20), np.float32)
    img[10, 12] = 1
    shift = np.eye(3)
    shift[:2, 2] = [2, -3]  # source (x, y) -> (x + 2, y - 3)
    out = warp(img, shift, (20, 20), order=1)
    assert out[7, 14] == pytest.approx(1)
    assert np.isnan(out[19, 0])  # source x = -2 is outside
    assert np.isfinite(out[:17, 2:]).all()


def test_geometry_from_meta():
    g = geometry_from_meta({"shape": [2, 30, 40], "pixel_size_m": [1e-7, 1e-7],
                            "centre_m": [1.0, 2.0], "rotation_rad": 0.5})
    assert g.shape_yx == (30, 40)
    assert g.rotation_rad == 0.5


class _StrictReader:
    """An image read region by region; refuses regions larger than ``max_px``."""

    def __init__(self, array, max_px):
        self.array, self.shape, self.max_px, self.px_read = array, array.shape, max_px, 0

    def read(self, r0, r1, c0, c1):
        n = (r1 - r0) * (c1 - c0)
        assert n <= self.max_px, f"region of {n} px asked"
        self.px_read += n
        return self.array[r0:r1, c0:c1].copy()


@pytest.mark.parametrize(("factor", "sigma"), [(20.0, 10.0), (20.0, None), (4.0, 0.0),
                                               (3.7, None), (1.0, 0.0), (1.3, None)])
def test_smooth_resample_by_blocks_equals_the_whole_image(factor, sigma):
    from em2fm.geometry import smooth_resample_regions

    em = (np.random.default_rng(0).normal(size=(700, 611)) * 100 + 1000).astype(np.uint16)
    whole, m = smooth_resample(em, factor, sigma)
    reader = _StrictReader(em, max_px=em.size // 4)
    blocks, m2 = smooth_resample_regions(reader, factor, sigma, block_px=128)
    np.testing.assert_array_equal(blocks, whole)  # bit for bit
    np.testing.assert_array_equal(m, m2)
    assert reader.px_read < 3 * em.size  # halos: at most twice more than the image


@pytest.mark.parametrize("order", [1, 3])
def test_warp_by_bands_equals_the_whole_destination(order, monkeypatch):
    """Banded warp (coefficients once per channel) = one map_coordinates call, bit for bit."""
    from scipy import ndimage

    from em2fm import geometry

    rng = np.random.default_rng(0)
    img = (rng.normal(size=(2, 150, 170)) * 100 + 500).astype(np.uint16)
    m = np.array([[1.07, 0.05, -3.3], [-0.04, 0.98, 5.1], [0, 0, 1]])
    rows, cols = np.mgrid[0:160, 0:140].astype(np.float64)
    src = apply_affine(np.linalg.inv(m), np.stack([cols, rows], axis=-1))
    coords = np.stack([src[..., 1], src[..., 0]])
    outside = ((coords[0] < -0.5) | (coords[0] > 149.5) | (coords[1] < -0.5)
               | (coords[1] > 169.5))
    ref = np.stack([ndimage.map_coordinates(ch.astype(np.float32), coords, order=order,
                                            mode="nearest") for ch in img])
    ref[:, outside] = np.nan
    monkeypatch.setattr(geometry, "WARP_BAND_PX", 1000)  # 7 rows per band
    np.testing.assert_array_equal(warp(img, m, (160, 140), order=order), ref)
    np.testing.assert_array_equal(warp(img[1], m, (160, 140), order=order), ref[1])
