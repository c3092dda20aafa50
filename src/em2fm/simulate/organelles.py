"""Granule and mitochondrion profiles: random, non-overlapping, each in its zone."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from .anatomy import (
    _ACINAR,
    _ALPHA,
    _BETA,
    _GLUCAGON,
    _INSULIN,
    _MITO,
    _ORGANELLE_GAP_UM,
    _ZYMOGEN,
    STAIN_DENSITY,
    _random_in_disc,
    _Warp,
)
from .cells import _Cells
from .params import SimulationParams


@dataclass
class _Organelles:
    """Granule and mitochondrion profiles (local µm, unwarped frame: round granules)."""

    kind: np.ndarray  # (M,) _ZYMOGEN / _INSULIN / _GLUCAGON / _MITO
    centre: np.ndarray  # (M, 2)
    radius: np.ndarray  # (M,) profile radius; semi-major axis for mitochondria
    core_radius: np.ndarray  # (M,) dense-core radius (0: the section misses the core)
    core_offset: np.ndarray  # (M, 2) core centre relative to the centre
    minor: np.ndarray  # (M,) semi-minor axis of mitochondria
    angle: np.ndarray  # (M,) long-axis angle of mitochondria (rad)
    level: np.ndarray  # (M,) stain density of the dense core
    phase: np.ndarray  # (M,) crista phase (rad)
    lift: float = field(init=False, default=0.0)
    tree: cKDTree | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        # Power-distance trick: with centres lifted to z = sqrt(R² - r²), the nearest lifted
        # centre to (x, y, 0) is the disc of smallest power distance |p - c|² - r², i.e. the
        # (non-overlapping) disc that contains the point.
        if len(self.radius):
            self.lift = float(self.radius.max())
            z = np.sqrt(self.lift**2 - self.radius**2)
            self.tree = cKDTree(np.column_stack([self.centre, z]))

    def nearest(self, q: np.ndarray, reach: float) -> np.ndarray:
        """Index of the profile containing ``q`` or within ``reach`` µm of it; -1 elsewhere."""
        if self.tree is None:
            return np.full(len(q), -1)
        lifted = np.column_stack([q, np.zeros(len(q))])
        _, idx = self.tree.query(lifted, k=1, distance_upper_bound=self.lift + reach)
        return np.where(idx < len(self.kind), idx, -1)



# ----------------------------------------------------------------------------- organelles


@dataclass
class _OrganelleSpec:
    """How one organelle kind is drawn."""

    kind: int
    cell_kind: int
    area_fraction: float
    diameter_um: float  # 3-D diameter (granules) or width (mitochondria)
    core_fraction: float
    zone: str  # "apical", "basal" or "any"


def _organelle_specs(params: SimulationParams) -> list[_OrganelleSpec]:
    """Organelle kinds, mitochondria first (they are placed first)."""
    mito = params.mitochondrion_area_fraction
    width = params.mitochondrion_width_nm * 1e-3
    return [
        _OrganelleSpec(_MITO, _ACINAR, mito, width, 0.0, "basal"),
        _OrganelleSpec(_MITO, _BETA, mito, width, 0.0, "any"),
        _OrganelleSpec(_MITO, _ALPHA, mito, width, 0.0, "any"),
        _OrganelleSpec(_ZYMOGEN, _ACINAR, params.zymogen_area_fraction,
                       params.zymogen_diameter_um, 0.97, "apical"),
        _OrganelleSpec(_INSULIN, _BETA, params.insulin_granule_area_fraction,
                       params.insulin_granule_diameter_nm * 1e-3,
                       params.insulin_core_fraction, "any"),
        _OrganelleSpec(_GLUCAGON, _ALPHA, params.glucagon_granule_area_fraction,
                       params.glucagon_granule_diameter_nm * 1e-3,
                       params.glucagon_core_fraction, "any"),
    ]


def _in_zone(cells: _Cells, params: SimulationParams, spec: _OrganelleSpec, p: np.ndarray,
             radius: np.ndarray, warp: _Warp) -> np.ndarray:
    """Whether profiles of ``radius`` centred at local points ``p`` (µm) fit their zone."""
    q = warp(p)
    owner, other, dm = cells.membrane_distance(q)
    ok = cells.kind[owner] == spec.cell_kind
    ok &= dm - cells.half_gap(owner, other) > radius + 0.05
    ok &= cells.nucleus_distance(q, owner) > radius + 0.05
    to_apex = np.linalg.norm(q - cells.apex[owner], axis=1)
    reach = cells.apex_reach[owner]
    if spec.cell_kind == _ACINAR:
        ok &= to_apex > cells.lumen_radius[owner] + radius + 0.05
    if spec.zone == "apical":
        ok &= to_apex < params.zymogen_zone_frac * reach
    elif spec.zone == "basal":
        ok &= to_apex > 0.5 * reach
    return ok


def _draw_profiles(rng: np.random.Generator, spec: _OrganelleSpec, n: int,
                   size_cv: float) -> dict[str, Any]:
    """Random section profiles of ``n`` organelles of one kind (3-D size CV ``size_cv``)."""
    sigma = math.sqrt(math.log1p(size_cv**2))
    if spec.kind == _MITO:
        minor = spec.diameter_um / 2 * rng.uniform(0.75, 1.25, n)
        major = minor * rng.uniform(1.1, 4.0, n)
        return {"radius": major, "minor": minor, "core_radius": np.zeros(n),
                "level": np.full(n, STAIN_DENSITY["mito_matrix"])}
    sphere = spec.diameter_um / 2 * rng.lognormal(-sigma**2 / 2, sigma, n)
    height = rng.uniform(0.0, 0.8, n) * sphere  # section plane vs granule centre
    radius = np.sqrt(sphere**2 - height**2)
    core = np.sqrt(np.clip((spec.core_fraction * sphere) ** 2 - height**2, 0.0, None))
    level = {
        _ZYMOGEN: rng.uniform(0.78, 0.92, n) / 0.85 * STAIN_DENSITY["zymogen_granule"],
        _INSULIN: np.full(n, STAIN_DENSITY["insulin_core"]),
        _GLUCAGON: np.full(n, STAIN_DENSITY["glucagon_core"]),
    }[spec.kind]
    return {"radius": radius, "minor": radius, "core_radius": core, "level": level}


def _hard_core_keep(centres: np.ndarray, radius: np.ndarray,
                    old_centres: np.ndarray, old_radius: np.ndarray) -> np.ndarray:
    """Mask of candidates (in priority order) overlapping neither accepted profiles nor an
    earlier candidate (Matérn type II thinning)."""
    keep = np.ones(len(centres), bool)
    if len(centres) == 0:
        return keep
    reach = radius.max() + _ORGANELLE_GAP_UM
    if len(old_centres):
        k = min(16, len(old_centres))
        d, j = cKDTree(old_centres).query(centres, k=k,
                                          distance_upper_bound=reach + old_radius.max())
        valid = j < len(old_centres)
        limit = radius[:, None] + np.where(valid, old_radius[np.minimum(j, len(old_radius) - 1)],
                                           0.0) + _ORGANELLE_GAP_UM
        keep &= ~np.any(valid & (d < limit), axis=1)
    pairs = cKDTree(centres).query_pairs(2 * reach, output_type="ndarray")
    if len(pairs):
        i, j = pairs.min(axis=1), pairs.max(axis=1)
        close = np.linalg.norm(centres[i] - centres[j], axis=1) < (
            radius[i] + radius[j] + _ORGANELLE_GAP_UM)
        keep[j[close]] = False
    return keep


def _place_organelles(rng: np.random.Generator, params: SimulationParams, cells: _Cells,
                      low: np.ndarray, high: np.ndarray, warp: _Warp) -> _Organelles:
    """Random, non-overlapping organelle profiles filling each zone to its area fraction.

    Organelles live in the unwarped local frame (round granules); their zones are tested
    in the warped frame of the cells.
    """
    area = float(np.prod(high - low))
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("kind", "centre", "radius", "minor", "core_radius", "level")}
    for spec in _organelle_specs(params):
        if spec.area_fraction <= 0:
            continue
        probe = rng.uniform(low, high, (4000, 2))
        mean_r = spec.diameter_um / 2 * (0.8 if spec.kind != _MITO else 1.0)
        zone_share = _in_zone(cells, params, spec, probe, np.full(len(probe), mean_r),
                              warp).mean()
        if zone_share == 0:
            continue
        sample = _draw_profiles(rng, spec, 2000, params.granule_size_cv)
        mean_area = float(np.mean(np.pi * sample["radius"] * sample["minor"]))
        target = int(spec.area_fraction * zone_share * area / mean_area)
        placed = 0
        for _ in range(6):
            need = target - placed
            if need <= 0:
                break
            n_cand = int(2.5 * need / zone_share) + 16
            centre = rng.uniform(low, high, (n_cand, 2))
            prof = _draw_profiles(rng, spec, n_cand, params.granule_size_cv)
            ok = _in_zone(cells, params, spec, centre, prof["radius"], warp)
            centre, prof = centre[ok], {k: v[ok] for k, v in prof.items()}
            old_c = (np.concatenate(columns["centre"]) if columns["centre"]
                     else np.zeros((0, 2)))
            old_r = np.concatenate(columns["radius"]) if columns["radius"] else np.zeros(0)
            keep = np.flatnonzero(_hard_core_keep(centre, prof["radius"], old_c, old_r))[:need]
            columns["centre"].append(centre[keep])
            columns["kind"].append(np.full(len(keep), spec.kind))
            for k in ("radius", "minor", "core_radius", "level"):
                columns[k].append(prof[k][keep])
            placed += len(keep)
    merged = {k: (np.concatenate(v) if v else np.zeros((0, 2) if k == "centre" else 0))
              for k, v in columns.items()}
    n = len(merged["kind"])
    core_room = np.clip(merged["radius"] - merged["core_radius"] - 0.01, 0.0, None)
    insulin = merged["kind"] == _INSULIN
    offset = _random_in_disc(rng, 1.0, n) * (0.5 * core_room * insulin)[:, None]
    return _Organelles(
        kind=merged["kind"].astype(int),
        centre=merged["centre"],
        radius=merged["radius"],
        core_radius=merged["core_radius"],
        core_offset=offset.reshape(n, 2),
        minor=merged["minor"],
        angle=_mito_angles(rng, cells, warp(merged["centre"])),
        level=merged["level"],
        phase=rng.uniform(0, 2 * math.pi, n),
    )


def _mito_angles(rng: np.random.Generator, cells: _Cells, centre: np.ndarray) -> np.ndarray:
    """Long-axis angles: acinar mitochondria lie along the RER (tangential), others random."""
    n = len(centre)
    if n == 0:
        return np.zeros(0)
    owner, _, _ = cells.membrane_distance(centre)
    radial = centre - cells.apex[owner]
    tangential = np.arctan2(radial[:, 1], radial[:, 0]) + math.pi / 2
    acinar = cells.kind[owner] == _ACINAR
    return np.where(acinar, tangential + rng.normal(0, 0.35, n), rng.uniform(0, math.pi, n))


