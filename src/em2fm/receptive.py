"""Receptive field of the asymmetric U-Net and the EM context every window gets.

Torch-free, so that config validation can use it. The one source of truth for the
EM context (``margin``, in target px) used by tiles, training windows, validation
and prediction is :func:`context_margin`: the smallest margin that covers the
network's receptive field and keeps the window sizes valid. With that much context
and window origins on the pooling grid (:func:`window_period`), a window's output
does not depend on where the window grid falls, so butted windows are seam-free
(exactly, in float32 up to rounding).

The receptive field is computed by propagating a pixel interval backwards through
the architecture of :class:`em2fm.unet.AsymmetricUNet` (3×3 convolutions, 2×2 max
pooling, bilinear ×2 upsampling with ``align_corners=False``, skip connections);
tests/test_inference.py checks it against the network's impulse response.
"""

from __future__ import annotations

import math


def _conv(iv: tuple[int, int], n: int = 2) -> tuple[int, int]:
    """Interval needed by ``n`` stacked 3×3 convolutions (padding 1)."""
    return iv[0] - n, iv[1] + n


def _pool_back(iv: tuple[int, int]) -> tuple[int, int]:
    """2×2/2 pooling: output ``[lo, hi]`` needs input ``[2·lo, 2·hi + 1]``."""
    return 2 * iv[0], 2 * iv[1] + 1


def _up_back(iv: tuple[int, int]) -> tuple[int, int]:
    """Bilinear ×2 (align_corners False): ``[lo, hi]`` needs ``[⌊(lo-1)/2⌋, ⌊(hi+1)/2⌋]``."""
    return (iv[0] - 1) // 2, (iv[1] + 1) // 2


def _union(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return min(a[0], b[0]), max(a[1], b[1])


DEFAULT_STEM = "blocks"  # the stem of models and settings written before model.stem existed


def first_level(em_scale: int, stem: str) -> int:
    """First level with a block of 3×3 convolutions (see :class:`em2fm.unet.UNetConfig`)."""
    return round(math.log2(em_scale)) if stem == "patch" else 0


def _encoder_back(level: int, iv: tuple[int, int], em_scale: int = 1,
                  stem: str = DEFAULT_STEM) -> tuple[int, int]:
    """EM px (level 0) needed by the interval ``iv`` of encoder block ``level``'s output.

    With the ``"patch"`` stem, level ``log2(em_scale)`` is reached from the EM by one
    ``em_scale``-px convolution of stride ``em_scale``: ``[lo, hi]`` needs
    ``[em_scale·lo, em_scale·hi + em_scale - 1]``.
    """
    first = first_level(em_scale, stem)
    iv = _conv(iv)
    while level > first:
        iv = _conv(_pool_back(iv))
        level -= 1
    if first:
        iv = em_scale * iv[0], em_scale * iv[1] + em_scale - 1
    return iv


def _levels(depth: int, em_scale: int) -> list[int]:
    n_up = depth - round(math.log2(em_scale))
    return list(range(depth - 1, depth - 1 - n_up, -1))


def _decoder_back(depth: int, levels: list[int], idx: int, iv: tuple[int, int],
                  em_scale: int, stem: str) -> tuple[int, int]:
    """EM px needed by the interval ``iv`` of decoder block ``idx``'s output."""
    iv = _conv(iv)
    skip = _encoder_back(levels[idx], iv, em_scale, stem)
    up = _up_back(iv)
    deeper = (_encoder_back(depth, up, em_scale, stem) if idx == 0
              else _decoder_back(depth, levels, idx - 1, up, em_scale, stem))
    return _union(skip, deeper)


def input_interval(depth: int, em_scale: int, out_px: int,
                   stem: str = DEFAULT_STEM) -> tuple[int, int]:
    """EM input px ``[first, last]`` that output (target) pixel ``out_px`` depends on."""
    levels = _levels(depth, em_scale)
    iv = (out_px, out_px)
    if not levels:
        return _encoder_back(depth, iv, em_scale, stem)
    return _decoder_back(depth, levels, len(levels) - 1, iv, em_scale, stem)


def receptive_radius_em(depth: int, em_scale: int, stem: str = DEFAULT_STEM) -> int:
    """Receptive-field reach (EM input px) beyond an output pixel's own ``em_scale`` block.

    The maximum over the output pixel's phase on the pooling grid and both sides.
    """
    reach = 0
    for i in range(max(1, window_period(depth, em_scale))):
        lo, hi = input_interval(depth, em_scale, i, stem)
        reach = max(reach, i * em_scale - lo, hi - (i * em_scale + em_scale - 1))
    return reach


def window_period(depth: int, em_scale: int) -> int:
    """Pooling-grid period in target px: window origins must be multiples of it."""
    return max(1, 2**depth // em_scale)


def context_margin(depth: int, em_scale: int, stem: str = DEFAULT_STEM) -> int:
    """EM context (target px) that covers the receptive field and keeps windows valid.

    The smallest ``m ≥ ⌈radius / em_scale⌉`` with ``2·m·em_scale`` a multiple of
    ``2**depth`` (so a window of a multiple of :func:`window_period` target px plus its
    context is a valid network input).
    """
    m = math.ceil(receptive_radius_em(depth, em_scale, stem) / em_scale)
    while (2 * m * em_scale) % 2**depth:
        m += 1
    return m


def _symmetric_back(depth: int, idx: int, iv: tuple[int, int]) -> tuple[int, int]:
    """Binned px needed by ``iv`` of decoder block ``idx`` (0: deepest) of the symmetric
    U-Net (:class:`em2fm.unet.SymmetricUNet`): 3×3 convolutions, 2×2 max pooling, 2×2
    stride-2 transposed convolutions (output ``o`` reads input ``⌊o/2⌋``)."""
    iv = _conv(iv)
    skip = _encoder_back(depth - 1 - idx, iv)
    up = iv[0] // 2, iv[1] // 2
    deeper = _encoder_back(depth, up) if idx == 0 else _symmetric_back(depth, idx - 1, up)
    return _union(skip, deeper)


def symmetric_context_margin(depth: int) -> int:
    """EM context (target px) that covers the receptive field of the symmetric U-Net baseline
    with ``depth`` contractions on EM binned to the target grid, and keeps windows valid
    (``2·m`` a multiple of ``2**depth``); the maximum over an output pixel's phase."""
    reach = 0
    for i in range(2**depth):
        lo, hi = _symmetric_back(depth, depth - 1, (i, i))
        reach = max(reach, i - lo, hi - i)
    return math.ceil(reach / 2 ** (depth - 1)) * 2 ** (depth - 1)


def resolve_margin(setting: int | None, depth: int, em_scale: int,
                   stem: str = DEFAULT_STEM) -> int:
    """The margin to use: ``setting`` (config ``tiles.margin``) or, when null, the computed one.

    Raises:
        ValueError: ``setting`` is smaller than the receptive field needs.
    """
    need = context_margin(depth, em_scale, stem)
    if setting is None:
        return need
    if int(setting) < need:
        raise ValueError(
            f"tiles.margin {setting} target px is less than the network's receptive field "
            f"needs ({need} target px for model.depth {depth}, model.stem {stem}, tiles.em_scale "
            f"{em_scale}): "
            "windows would show seams. Fix: set tiles.margin to null (computed) or ≥ "
            f"{need}")
    return int(setting)
