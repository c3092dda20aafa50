"""Windowed inference shared by training (validation), registration rounds and prediction.

A section's EM work image (z-scored, on the network's input grid, ``em_scale`` EM
px per target px) is predicted window by window:

- **context**: each window of ``window`` target px is cut with ``margin`` target px of
  EM context on every side (reflected at the image border) and only its centre is kept.
  ``margin`` comes from :func:`em2fm.receptive.context_margin` (the receptive field),
  the same value the tiles, the training windows and the validation use;
- **alignment**: window origins are multiples of the pooling period
  (:func:`em2fm.receptive.window_period`), so every window sees the same pooling grid.
  With both, the output of a pixel does not depend on the window it falls in: butted
  windows give the whole-image prediction, without seams;
- **blending** (optional ``overlap`` target px): neighbouring windows overlap and are
  averaged with raised-cosine weights normalised to sum to one, exact for any model
  whose windows agree (a constant, a linear ramp) and smooth where they do not
  (half precision, a margin below the receptive field);
- **batching, device, threads**: windows go through the network ``batch`` at a time,
  on CUDA in half precision (autocast float16) when present; an out-of-memory error
  halves the batch and goes on;
- **test-time augmentation** (optional): the 8 flips/rotations are averaged, their
  standard deviation returned as the uncertainty.

Results are produced band by band (rows of windows), so a caller can write them out
as they come (:meth:`WindowedPredictor.iter_rows`) and memory stays bounded by one
band, whatever the section size; :meth:`WindowedPredictor.predict` collects them.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import itertools
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .geometry import reflect_index
from .receptive import window_period

log = logging.getLogger(__name__)


def choose_device(requested: str = "auto") -> torch.device:
    """``cuda`` when requested or available (auto), else ``cpu``."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; "
                           "set it to auto or cpu")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def set_threads(threads: int, keep_memory: bool = True) -> int:
    """Use the granted threads, but not more than the CPUs this process may run on.

    With ``keep_memory`` also keeps freed memory for reuse (:func:`keep_freed_memory`):
    every stage that runs the network calls this first.
    """
    n = max(1, min(int(threads), len(os.sched_getaffinity(0))))
    torch.set_num_threads(n)
    if keep_memory:
        keep_freed_memory()
    return n


#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size (bytes) come from the heap and are reused once freed.
HEAP_BLOCK_MAX = 2**30
_allocator_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed blocks instead of returning them to the OS.

    By default glibc serves blocks above 32 MiB with ``mmap`` and unmaps them on free,
    and trims the heap top: every window's input and activations (tens of MiB) are then
    page-faulted and zeroed again by the kernel, which costs about as much as the
    convolutions (half the CPU time is system time). With blocks up to
    :data:`HEAP_BLOCK_MAX` on the heap and no trimming, CPU inference at 512-px windows
    runs about 2× faster (``benchmarks/inference.py speed``). Peak memory is unchanged:
    the process keeps what it already used at its peak. Returns True when applied; on a
    C library without ``mallopt`` (musl, macOS) it does nothing. Idempotent.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            mallopt = getattr(libc, "mallopt", None)
            if mallopt is not None:
                _allocator_tuned = bool(mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_MAX)
                                        and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
        except OSError:
            pass
        log.debug("heap reuse of freed blocks up to %d B: %s", HEAP_BLOCK_MAX,
                  _allocator_tuned)
    return _allocator_tuned


def amp_dtype(device: torch.device, amp: bool = True) -> torch.dtype | None:
    """Autocast dtype: float16 on CUDA when ``amp``, None (full precision) otherwise.

    CPU autocast (bfloat16) is slower than float32 convolutions on most CPUs and
    loses accuracy, so the CPU path stays in float32.
    """
    if amp and device.type == "cuda":
        return torch.float16
    return None


#: EM input px per forward pass when the batch is automatic (None): on a GPU a batch
#: large enough to keep it busy (out-of-memory halves it); on a CPU a few windows, since
#: batching gains little there and activations cost ~250 B per input px (16 channels).
BATCH_INPUT_PX = {"cuda": 2**26, "cpu": 3 * 2**19}


def auto_batch(device: torch.device, input_edge_px: int) -> int:
    """Windows per forward pass for square inputs of ``input_edge_px`` EM px."""
    budget = BATCH_INPUT_PX.get(device.type, BATCH_INPUT_PX["cpu"])
    return max(1, budget // (input_edge_px * input_edge_px))


def is_out_of_memory(err: BaseException) -> bool:
    """True for a CUDA (or other allocator) out-of-memory error."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def fuse_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of an eval-mode ``model`` with each Conv2d→BatchNorm2d pair folded into one conv.

    Same outputs up to float rounding; about 2× faster on a CPU (benchmarks/inference.py),
    since batch normalisation in eval mode is a separate memory-bound pass per layer.
    A model in training mode is returned as is (its statistics are still changing).
    """
    if model.training:
        return model
    fused = copy.deepcopy(model)
    for mod in fused.modules():
        if not isinstance(mod, torch.nn.Sequential):
            continue
        layers = list(mod)
        if not any(isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d)
                   for a, b in itertools.pairwise(layers)):
            continue
        new, i = [], 0
        while i < len(layers):
            a = layers[i]
            b = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d):
                new.append(fuse_conv_bn_eval(a, b))
                i += 2
            else:
                new.append(a)
                i += 1
        for key in list(mod._modules):
            del mod._modules[key]
        for key, layer in enumerate(new):
            mod.add_module(str(key), layer)
    return fused


def model_margin(model: torch.nn.Module, trained_margin: int | None = None) -> int:
    """EM context (target px) for ``model``: its receptive field, or more if trained with more.

    ``model`` is an :class:`em2fm.unet.AsymmetricUNet` or the symmetric U-Net baseline; its
    config knows its receptive field (``cfg.context_margin``).
    """
    need = model.cfg.context_margin
    if trained_margin is not None and int(trained_margin) < need:
        log.warning("the model was trained with %d target px of EM context, less than its "
                    "receptive field (%d): predicting with %d", trained_margin, need, need)
    return max(need, int(trained_margin or 0))


class EMSource(Protocol):
    """EM on the work grid, z-scored, read region by region (float32)."""

    shape: tuple[int, int]  # work px (rows, cols)

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows ``r0:r1``, columns ``c0:c1`` (work px), reflected beyond the image."""
        ...


def read_reflected(array: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """``array[r0:r1, c0:c1]`` with reflection outside (a view when fully inside)."""
    h, w = array.shape[-2:]
    if r0 >= 0 and c0 >= 0 and r1 <= h and c1 <= w:
        return array[..., r0:r1, c0:c1]
    rows = reflect_index(np.arange(r0, r1), h)
    cols = reflect_index(np.arange(c0, c1), w)
    return array[..., rows[:, None], cols[None, :]]


@dataclass
class ArraySource:
    """An in-memory (or memory-mapped) prepared EM work image as an :class:`EMSource`."""

    array: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """Work px (rows, cols)."""
        return self.array.shape[-2], self.array.shape[-1]

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows ``r0:r1``, columns ``c0:c1`` (work px), reflected beyond the image."""
        return np.asarray(read_reflected(self.array, r0, r1, c0, c1), np.float32)


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp of ``n`` samples, strictly inside (0, 1)."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float64)


def blend_weights(size: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """1-D window weight: raised-cosine ramps over ``overlap`` px towards inner neighbours."""
    w = np.ones(size, np.float64)
    if overlap > 0:
        if not first:
            w[:overlap] = _ramp(overlap)
        if not last:
            w[size - overlap:] = _ramp(overlap)[::-1]
    return w


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Window origins ``0, stride, …`` until ``n`` target px are covered."""
    count = 1 if n <= window else 1 + math.ceil((n - window) / stride)
    return [i * stride for i in range(count)]


_DIHEDRAL = [(k, flip) for flip in (False, True) for k in range(4)]


def _apply(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1))


def _invert(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, -k, dims=(-2, -1))
    if flip:
        x = torch.flip(x, dims=(-1,))
    return x


@dataclass(frozen=True)
class InferenceSettings:
    """How windows are cut and run (config ``predict``).

    Attributes:
        window: output window edge in target px (rounded up to the pooling period).
        overlap: target px shared by neighbouring windows, blended (0: butted).
        tta: average the 8 flips/rotations; their std is the uncertainty.
        batch: windows per forward pass (halved on out-of-memory); None: :func:`auto_batch`.
        amp: half precision on CUDA.
        fuse: fold batch normalisation into the convolutions (eval-mode models).
    """

    window: int = 64
    overlap: int = 0
    tta: bool = False
    batch: int | None = None
    amp: bool = True
    fuse: bool = True


class WindowedPredictor:
    """Predict a section's target grid from an :class:`EMSource`, window by window."""

    def __init__(self, model: torch.nn.Module, margin: int,
                 settings: InferenceSettings = InferenceSettings(),
                 device: torch.device | None = None) -> None:
        cfg = model.cfg
        net = fuse_batchnorm(model) if settings.fuse else model
        if net is model:  # the caller's model is not changed
            net = copy.deepcopy(model)
        # channels-last (NHWC) activations: oneDNN's native layout on CPUs (no reordering
        # around every convolution, ~1.7× faster there) and tensor-core friendly on GPUs
        self.model = net.to(memory_format=torch.channels_last)
        self.s = int(cfg.em_scale)
        self.multiple = int(cfg.multiple)
        self.out_channels = int(cfg.out_channels)
        self.period = window_period(cfg.depth, cfg.em_scale)
        self.margin = int(margin)
        p = self.period
        self.window = max(p, -(-int(settings.window) // p) * p)
        while ((self.window + 2 * self.margin) * self.s) % self.multiple:
            self.window += p  # margins not from context_margin: find a valid size
        ov = -(-max(0, int(settings.overlap)) // p) * p
        self.overlap = min(ov, self.window - p)
        self.stride = self.window - self.overlap
        self.tta = bool(settings.tta)
        self.device = device or next(model.parameters()).device
        edge = (self.window + 2 * self.margin) * self.s
        self.batch = (auto_batch(self.device, edge) if settings.batch is None
                      else max(1, int(settings.batch)))
        self.dtype = amp_dtype(self.device, settings.amp)
        self.transforms = _DIHEDRAL if self.tta else _DIHEDRAL[:1]

    # -- network ---------------------------------------------------------------------------
    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mean and variance over the transforms of the cropped outputs (float32, CPU)."""
        m, w = self.margin, self.window
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type,
                                                    dtype=self.dtype or torch.float32,
                                                    enabled=self.dtype is not None):
            ys = [_invert(self.model(_apply(x, k, flip)), k, flip).float()[:, :, m: m + w,
                                                                              m: m + w]
                  .contiguous() for k, flip in self.transforms]
        if len(ys) == 1:
            return ys[0].cpu(), None
        y = torch.stack(ys)
        return y.mean(0).cpu(), y.var(0, unbiased=False).cpu()

    def forward(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Windows ``(n, 1, S, S)`` → per-window mean and variance over TTA, ``(n, C, w, w)``.

        Runs ``batch`` windows at a time; an out-of-memory error halves the batch (kept
        for the rest of the run) and retries, until a single window does not fit. The
        variance is None without TTA.
        """
        means, variances = [], []
        i = 0
        while i < len(x):
            b = self.batch
            try:
                mean, var = self._run(x[i: i + b])
            except Exception as err:
                if not is_out_of_memory(err) or self.batch == 1:
                    raise
                self.batch = max(1, self.batch // 2)
                log.warning("out of memory with %d windows per batch: going on with %d",
                            b, self.batch)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            means.append(mean)
            variances.append(var)
            i += b
        var_out = None if variances[0] is None else torch.cat(variances).numpy()
        return torch.cat(means).numpy(), var_out

    # -- windows ---------------------------------------------------------------------------
    def iter_rows(self, source: EMSource) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """Yield ``(row0, mean, std)`` blocks of finished target rows, top to bottom.

        ``mean``/``std`` are ``(C, n, W)`` float32 in normalised units (``std`` None
        without TTA). Memory: one band of windows.
        """
        s, m, win, ov = self.s, self.margin, self.window, self.overlap
        h, w = source.shape[0] // s, source.shape[1] // s
        rows = window_starts(h, win, self.stride)
        cols = window_starts(w, win, self.stride)
        wp = cols[-1] + win
        c = self.out_channels
        acc = np.zeros((c, win, wp), np.float64)
        acc_sq = np.zeros_like(acc) if self.tta else None
        wsum = np.zeros((win, wp), np.float64)
        size = (win + 2 * m) * s
        for bi, r in enumerate(rows):
            wy = blend_weights(win, ov, bi == 0, bi == len(rows) - 1)
            x = np.stack([source.read((r - m) * s, (r - m) * s + size,
                                      (cc - m) * s, (cc - m) * s + size) for cc in cols])
            mean, var = self.forward(torch.from_numpy(np.ascontiguousarray(x))[:, None])
            for j, cc in enumerate(cols):
                wgt = wy[:, None] * blend_weights(win, ov, j == 0, j == len(cols) - 1)[None, :]
                mj = mean[j].astype(np.float64)
                acc[:, :, cc: cc + win] += mj * wgt
                if acc_sq is not None and var is not None:  # E[y²] = var + mean², float64
                    acc_sq[:, :, cc: cc + win] += (var[j] + mj * mj) * wgt
                wsum[:, cc: cc + win] += wgt
            last = bi == len(rows) - 1
            n_done = min(h - r, win if last else self.stride)
            if n_done > 0:
                out = acc[:, :n_done, :w] / wsum[:n_done, :w]
                std = None
                if acc_sq is not None:
                    var = acc_sq[:, :n_done, :w] / wsum[:n_done, :w] - out**2
                    std = np.sqrt(np.maximum(var, 0)).astype(np.float32)
                yield r, out.astype(np.float32), std
            if not last:
                k = self.stride
                for a in (acc, acc_sq, wsum):
                    if a is not None:
                        a[..., : win - k, :] = a[..., k:, :]
                        a[..., win - k:, :] = 0

    @torch.no_grad()
    def predict(self, source: EMSource | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The whole target grid ``(C, H, W)`` (mean, std or None), float32 normalised units."""
        if isinstance(source, np.ndarray):
            source = ArraySource(source)
        h, w = source.shape[0] // self.s, source.shape[1] // self.s
        mean = np.zeros((self.out_channels, h, w), np.float32)
        std = np.zeros_like(mean) if self.tta else None
        for r, block, sblock in self.iter_rows(source):
            mean[:, r: r + block.shape[1]] = block
            if std is not None and sblock is not None:
                std[:, r: r + block.shape[1]] = sblock
        return mean, std


def predict_array(model: torch.nn.Module, em_work: np.ndarray, margin: int,
                  settings: InferenceSettings = InferenceSettings(),
                  device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Predict a prepared EM work image (H·s, W·s) whole; see :class:`WindowedPredictor`."""
    was_training = model.training
    model.eval()
    try:
        return WindowedPredictor(model, margin, settings, device).predict(em_work)
    finally:
        model.train(was_training)
