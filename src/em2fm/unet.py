"""The asymmetric U-Net: long contraction path at EM resolution, short expansion path.

EM pixels are ``em_scale`` times smaller than the FM-resolution output pixels,
so the encoder halves the resolution ``depth`` times while the decoder doubles
it only ``depth - log2(em_scale)`` times, with skip connections from the
encoder levels of matching resolution.

The first ``log2(em_scale)`` contractions (the EM-resolution levels, whose features
reach the output only through deeper levels) take one of two forms (``stem``):

- ``"blocks"``: a block of two 3×3 convolutions at every EM-resolution level, then
  2×2 max pooling (the original design; about 60 kFLOP per EM px for the old defaults);
- ``"patch"``: one ``em_scale × em_scale`` convolution with stride ``em_scale`` (a
  learned patch embedding: every EM pixel of the block enters with its own weights;
  with ``em_scale²`` channels or more it can keep all of them) straight to the output
  grid, with ``widths[log2(em_scale)]`` channels. It costs a few FLOP per EM px, so the
  network's cost is that of its levels at and below the output grid
  (benchmarks/inference.py speed).

The output has one channel per FM channel on the target grid: an input of
``(N, 1, H·s, W·s)`` gives ``(N, C, H, W)``. ``H·s`` and ``W·s`` must be multiples of ``2**depth``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .receptive import DEFAULT_STEM, context_margin, first_level, symmetric_context_margin


def encode(encoder: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """The contraction path: each block's output (2× max-pooled between blocks)."""
    skips = []
    for i, block in enumerate(encoder):
        if i:
            x = F.max_pool2d(x, 2)
        x = block(x)
        skips.append(x)
    return skips


@dataclass(frozen=True)
class UNetConfig:
    """Architecture (config ``model`` plus data-derived sizes)."""

    in_channels: int = 1
    out_channels: int = 2
    base_channels: int = 16
    max_channels: int = 128
    depth: int = 4
    em_scale: int = 4
    stem: str = DEFAULT_STEM

    @property
    def first_level(self) -> int:
        """First encoder level with a block of 3×3 convolutions (0, or log2(em_scale))."""
        return first_level(self.em_scale, self.stem)

    @property
    def n_up(self) -> int:
        """Number of expansion (upsampling) steps."""
        return self.depth - round(math.log2(self.em_scale))

    @property
    def multiple(self) -> int:
        """Input sizes (work px) must be multiples of this."""
        return 2 ** self.depth

    @property
    def context_margin(self) -> int:
        """EM context (target px) that covers the receptive field (:mod:`em2fm.receptive`)."""
        return context_margin(self.depth, self.em_scale, self.stem)

    def as_dict(self) -> dict:
        """Plain dict (stored in checkpoints)."""
        return asdict(self)


class ConvBlock(nn.Sequential):
    """Two 3×3 convolutions, each followed by batch normalisation and ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class AsymmetricUNet(nn.Module):
    """U-Net with ``depth`` contractions and ``depth - log2(em_scale)`` expansions."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        k = math.log2(cfg.em_scale)
        if k != int(k) or cfg.em_scale < 1:
            raise ValueError(f"em_scale must be a power of 2, got {cfg.em_scale}")
        if cfg.n_up < 0:
            raise ValueError(f"model.depth ({cfg.depth}) must be at least log2(em_scale) "
                             f"({int(k)})")
        if cfg.stem not in ("blocks", "patch"):
            raise ValueError(f"model.stem must be 'blocks' or 'patch', got {cfg.stem!r}")
        self.cfg = cfg
        widths = [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(cfg.depth + 1)]
        self.widths = widths
        first = cfg.first_level
        if cfg.stem == "patch":  # EM blocks of em_scale² px → the output grid in one step
            self.stem = nn.Sequential(
                nn.Conv2d(cfg.in_channels, widths[first], cfg.em_scale, stride=cfg.em_scale,
                          bias=False),
                nn.BatchNorm2d(widths[first]),
                nn.ReLU(inplace=True),
            )
            cin = widths[first]
        else:
            self.stem = nn.Identity()
            cin = cfg.in_channels
        self.encoder = nn.ModuleList(
            [ConvBlock(cin, widths[first])]
            + [ConvBlock(widths[i - 1], widths[i]) for i in range(first + 1, cfg.depth + 1)]
        )
        # decoder levels: depth-1, depth-2, …, depth-n_up (the output resolution)
        self.levels = list(range(cfg.depth - 1, cfg.depth - 1 - cfg.n_up, -1))
        self.decoder = nn.ModuleList()
        prev = widths[cfg.depth]
        for level in self.levels:
            self.decoder.append(ConvBlock(prev + widths[level], widths[level]))
            prev = widths[level]
        self.head = nn.Conv2d(prev, cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """EM (N, 1, H·s, W·s), z-scored → FM (N, C, H, W) in normalised units."""
        if x.shape[-1] % self.cfg.multiple or x.shape[-2] % self.cfg.multiple:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be a multiple of "
                             f"{self.cfg.multiple}")
        skips = [None] * self.cfg.first_level + encode(self.encoder, self.stem(x))
        x = skips[-1]
        for level, block in zip(self.levels, self.decoder, strict=True):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skips[level]], dim=1))
        return self.head(x)


def build(cfg: UNetConfig) -> AsymmetricUNet:
    """Construct the network."""
    return AsymmetricUNet(cfg)


@dataclass(frozen=True)
class SymmetricUNetConfig(UNetConfig):
    """Sizes of :class:`SymmetricUNet` (``max_channels`` unused: widths are not capped)."""

    @property
    def n_up(self) -> int:
        """Number of expansion steps (as many as contractions)."""
        return self.depth

    @property
    def multiple(self) -> int:
        """Input sizes (work px) must be multiples of this (binning, then 2**depth)."""
        return self.em_scale * 2**self.depth

    @property
    def context_margin(self) -> int:
        """EM context (target px) that covers the (much wider) receptive field."""
        return symmetric_context_margin(self.depth)


class SymmetricUNet(nn.Module):
    """The usual label-free baseline: EM binned to the output grid, then a symmetric U-Net.

    The EM input on the work grid ``(N, 1, H·s, W·s)`` is averaged over ``s × s`` blocks
    (``s`` = ``em_scale``) to the FM-resolution output grid, then a U-Net with ``depth``
    contractions and as many expansions (widths ``base_channels · 2**level``, no cap)
    predicts ``(N, C, H, W)``. It takes the same input as :class:`AsymmetricUNet`, so the
    same training and windowed inference apply; ``H`` and ``W`` must be multiples of
    ``2**depth`` (``cfg.multiple`` counts work px).

    Args:
        out_channels: FM channels predicted.
        depth: contractions (×2 each), as many expansions.
        base_channels: width of the first level (doubling each level).
        em_scale: work px per output px (the binning factor).
        in_channels: EM channels.
    """

    def __init__(self, out_channels: int = 2, depth: int = 4, base_channels: int = 32,
                 em_scale: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        if em_scale < 1 or depth < 1:
            raise ValueError(f"em_scale ({em_scale}) and depth ({depth}) must be ≥ 1")
        self.cfg = SymmetricUNetConfig(in_channels=in_channels, out_channels=out_channels,
                                       base_channels=base_channels,
                                       max_channels=base_channels * 2**depth, depth=depth,
                                       em_scale=em_scale)
        self.em_scale = em_scale
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            [ConvBlock(in_channels, widths[0])]
            + [ConvBlock(widths[i - 1], widths[i]) for i in range(1, depth + 1)])
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
             for i in reversed(range(depth))])
        self.decoder = nn.ModuleList(
            [ConvBlock(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """EM (N, 1, H·s, W·s), z-scored → FM (N, C, H, W) in normalised units."""
        m = self.cfg.multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be a multiple of {m}")
        if self.em_scale > 1:
            x = F.avg_pool2d(x, self.em_scale)
        skips = encode(self.encoder, x)
        x = skips[-1]
        for up, block, skip in zip(self.up, self.decoder, reversed(skips[:-1]), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def describe(cfg: dict) -> str:
    """One sentence on an :class:`AsymmetricUNet` from its config dict (model card, report)."""
    k = round(math.log2(cfg["em_scale"]))
    n_up = cfg["depth"] - k
    if cfg.get("stem", DEFAULT_STEM) == "patch":
        head = (f"U-Net with a {cfg['em_scale']}×{cfg['em_scale']}-px stride-{cfg['em_scale']} "
                f"patch embedding of the EM onto the FM grid, {n_up} further contractions")
    else:
        head = f"U-Net with {cfg['depth']} contractions at EM resolution"
    return (f"{head} and {n_up} expansions to FM resolution (2 conv3x3+BN+ReLU per level, "
            "max-pool, bilinear upsampling, skip connections)")


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
