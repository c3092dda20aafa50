"""Training data: sections in memory, FM/EM normalisation, random training windows."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import io
from ..tiles import window_origins

log = logging.getLogger(__name__)


@dataclass
class SectionData:
    """One section's tiles in memory."""

    name: str
    split: str
    em: np.ndarray  # (H·s, W·s) z-scored
    fm: np.ndarray  # (C, H, W) raw ADU
    mask: np.ndarray  # (H, W)
    starts: np.ndarray  # (N, 2) window origins fully inside the mask
    pixel_size_m: float
    channels: list[str]
    registration_status: str = "ok"
    use_for_training: bool = True


def load_sections(tiles_npz: list[str | Path], tile_size: int) -> list[SectionData]:
    """Load tiles (npz + json beside it) and list the valid window origins."""
    out = []
    for path in tiles_npz:
        path = Path(path)
        arrays = io.load_npz(path)
        meta = io.read_json(path.with_suffix(".json"))
        mask = arrays["mask"].astype(bool)
        starts = window_origins(mask, tile_size)
        out.append(SectionData(meta["section"], meta["split"], arrays["em"], arrays["fm"],
                               mask, starts, float(meta["target_pixel_size_m"]),
                               meta["channels"], meta.get("registration_status", "ok"),
                               bool(meta.get("use_for_training", True))))
    return out


FM_PERCENTILES = (1.0, 99.5)  # per-section FM background and scale (fm_normalisation section)


def section_scaling(fm: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel background and range (ADU) of one section's FM inside its mask.

    Background: the :data:`FM_PERCENTILES` low percentile; range: high minus low percentile.
    """
    if not mask.any():
        return np.zeros(fm.shape[0]), np.ones(fm.shape[0])
    lo, hi = np.percentile(fm[:, mask].astype(np.float64), FM_PERCENTILES, axis=1)
    return lo, np.maximum(hi - lo, 1e-6)


@dataclass
class Normalisation:
    """How FM targets and EM inputs are normalised (stored in the checkpoint).

    ``global``: FM z-scored per channel with the mean and std of all training pixels.
    ``section``: each section's FM first mapped to reference units,
    ``(fm - background_s) / range_s · range_ref + background_ref`` (reference: the mean
    over training sections), then z-scored like ``global``; so predictions, denormalised
    with ``target_mean``/``target_std``, come back in FM units of a typical training
    section (ADU).
    """

    fm: str
    em: str
    mean: np.ndarray  # (C,) ADU, reference units
    std: np.ndarray  # (C,) ADU
    scaling: dict[str, tuple[np.ndarray, np.ndarray]]  # section → (background, range)
    reference: tuple[np.ndarray, np.ndarray] | None

    def target(self, s: SectionData) -> np.ndarray:
        """Normalised FM (C, H, W) float32 of a section."""
        fm = s.fm.astype(np.float64)
        if self.fm == "section":
            bg, rg = self.scaling[s.name]
            fm = ((fm - bg[:, None, None]) / rg[:, None, None] * self.reference[1][:, None, None]
                  + self.reference[0][:, None, None])
        return ((fm - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32)

    def as_meta(self) -> dict:
        """Checkpoint and model-card fields (plain types)."""
        out: dict = {"fm_normalisation": self.fm, "em_normalisation": self.em}
        if self.fm == "section":
            assert self.reference is not None
            out["fm_percentiles"] = list(FM_PERCENTILES)
            out["fm_reference_background"] = [float(v) for v in self.reference[0]]
            out["fm_reference_range"] = [float(v) for v in self.reference[1]]
            out["fm_section_background"] = {k: [float(v) for v in b]
                                            for k, (b, _) in self.scaling.items()}
            out["fm_section_range"] = {k: [float(v) for v in r]
                                       for k, (_, r) in self.scaling.items()}
        if self.em == "percentile":
            from ..tiles import EM_PERCENTILES
            out["em_percentiles"] = list(EM_PERCENTILES)
        return out


def normalisation(sections: list[SectionData], fm_mode: str = "global",
                  em_mode: str = "zscore") -> Normalisation:
    """Normalisation statistics from the training sections (see :class:`Normalisation`)."""
    scaling = {s.name: section_scaling(s.fm, s.mask) for s in sections}
    train_s = [s for s in sections if s.split == "train" and s.mask.any()]
    reference = None
    if fm_mode == "section" and train_s:
        reference = (np.mean([scaling[s.name][0] for s in train_s], axis=0),
                     np.mean([scaling[s.name][1] for s in train_s], axis=0))
    norm = Normalisation(fm_mode, em_mode, np.zeros(1), np.ones(1), scaling, reference)
    if not train_s:
        raise ValueError("no training section has FM/EM overlap; check registration and split")
    if fm_mode == "global":
        vals = [s.fm[:, s.mask] for s in train_s]
    else:
        n = train_s[0].fm.shape[0]
        norm.mean, norm.std = np.zeros(n), np.ones(n)  # identity: reference units
        vals = [norm.target(s)[:, s.mask] for s in train_s]
    allv = np.concatenate(vals, axis=1).astype(np.float64)
    norm.mean, norm.std = allv.mean(axis=1), np.maximum(allv.std(axis=1), 1e-6)
    return norm


def target_statistics(sections: list[SectionData]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (ADU) of FM inside the mask of the training sections."""
    norm = normalisation(sections, "global")
    return norm.mean, norm.std


def _window_sums(mask_or_map: np.ndarray, starts: np.ndarray, size: int) -> np.ndarray:
    """Sum of a map over the ``size``² windows at ``starts`` (summed-area table)."""
    sat = np.pad(mask_or_map.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    r, c = starts[:, 0], starts[:, 1]
    return sat[r + size, c + size] - sat[r, c + size] - sat[r + size, c] + sat[r, c]


SIGNAL_PERCENTILE = 99.0  # window_sampling signal: pixels above it count as rare signal


class WindowSampler:
    """Random training windows with EM context and dihedral augmentation.

    ``sampling="uniform"``: a section with probability ∝ its number of windows, then a
    window uniformly. ``"signal"``: half the windows drawn that way, the other half, for
    each channel in turn, ∝ the number of that channel's brightest pixels (above its
    :data:`SIGNAL_PERCENTILE` over the training pixels) in the window, so that rare signal
    (an islet, nuclei) is seen.
    """

    def __init__(self, sections: list[SectionData], tile_size: int, margin: int,
                 em_scale: int, mean: np.ndarray, std: np.ndarray, seed: int,
                 targets: list[np.ndarray] | None = None, sampling: str = "uniform") -> None:
        keep = [i for i, s in enumerate(sections) if len(s.starts)]
        self.sections = [sections[i] for i in keep]
        if not self.sections:
            raise ValueError(f"no training window of {tile_size} target px fits inside the "
                             "FM/EM overlap of any training section; lower tiles.tile_size")
        self.t, self.m, self.s = tile_size, margin, em_scale
        pad = margin * em_scale
        self.em = [np.pad(s.em, pad, mode="reflect") for s in self.sections]
        if targets is None:
            self.fm = [((s.fm - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
                       for s in self.sections]
        else:
            self.fm = [targets[i] for i in keep]
        weights = np.array([len(s.starts) for s in self.sections], float)
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)
        self.sampling = sampling
        self.cdf: list[np.ndarray] = []
        self.flat = np.concatenate([np.column_stack([np.full(len(s.starts), k), s.starts])
                                    for k, s in enumerate(self.sections)])
        if sampling == "signal":
            n_ch = self.fm[0].shape[0]
            for c in range(n_ch):
                vals = np.concatenate([f[c][s.mask] for f, s in zip(self.fm, self.sections,
                                                                    strict=True)])
                thr = np.percentile(vals, SIGNAL_PERCENTILE)
                w = np.concatenate([_window_sums((f[c] > thr) & s.mask, s.starts, tile_size)
                                    for f, s in zip(self.fm, self.sections, strict=True)])
                if w.sum() > 0:
                    self.cdf.append(np.cumsum(w) / w.sum())

    def _origin(self, i: int) -> tuple[int, int, int]:
        if self.sampling == "signal" and self.cdf and i % 2:
            cdf = self.cdf[(i // 2) % len(self.cdf)]
            j = min(int(np.searchsorted(cdf, self.rng.random(), side="right")),
                    len(cdf) - 1)
            k, r, c = self.flat[j]
            return int(k), int(r), int(c)
        k = self.rng.choice(len(self.sections), p=self.p)
        r, c = self.sections[k].starts[self.rng.integers(len(self.sections[k].starts))]
        return int(k), int(r), int(c)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(EM (n, 1, (T+2m)·s, …), FM (n, C, T, T)) as float32 tensors."""
        t, m, s = self.t, self.m, self.s
        xs, ys = [], []
        for i in range(n):
            k, r, c = self._origin(i)
            x = self.em[k][r * s: (r + t + 2 * m) * s, c * s: (c + t + 2 * m) * s]
            y = self.fm[k][:, r: r + t, c: c + t]
            rot, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
            if flip:
                x, y = x[:, ::-1], y[:, :, ::-1]
            x, y = np.rot90(x, rot), np.rot90(y, rot, axes=(1, 2))
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))

    def get_state(self) -> str:
        """The random state (JSON text: loads with ``weights_only=True``)."""
        return json.dumps(self.rng.bit_generator.state)

    def set_state(self, state: str) -> None:
        """Restore :meth:`get_state`."""
        self.rng.bit_generator.state = json.loads(state)


def trustworthy(sections: list[SectionData]) -> list[SectionData]:
    """The sections whose registration may train and validate the network.

    A section whose registration is not trustworthy (``use_for_training`` false in its
    tiles: a failed or low-confidence registration) would teach the network blur or a
    wrong placement, and would choose the checkpoint on a wrong target.

    Raises:
        ValueError: no training section is left.
    """
    for s in sections:
        if not s.use_for_training:
            log.warning("%s (%s) left out of training and validation: its registration is "
                        "%s (see results/registration/%s.json)", s.name, s.split,
                        s.registration_status, s.name)
    kept = [s for s in sections if s.use_for_training]
    if not any(s.split == "train" for s in kept):
        raise ValueError(
            "no training section has a trustworthy registration ("
            + ", ".join(f"{s.name}: {s.registration_status}" for s in sections if
                        s.split == "train") + "). Fix: read the reasons in the registration "
            "JSONs (results/registration/round*/<section>.json), widen the capture range "
            "(register.max_shift_um, max_rotation_deg, max_scale) if the stage metadata can "
            "be that far off, or set register.on_failure: metadata to trust the metadata")
    return kept


