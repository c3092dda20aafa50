"""Tissue layout: islet, acinar and endocrine cells (Voronoi), nuclei and nucleoli."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from .anatomy import _ACINAR, _ALPHA, _BETA, _FAR, _random_in_disc
from .params import SimulationParams

# ----------------------------------------------------------------------------- tissue layout


@dataclass
class _Islet:
    """Islet of Langerhans: a wavy disc (local µm)."""

    centre: np.ndarray
    radius: float
    harmonics: np.ndarray  # (K, 3): order, relative amplitude, phase

    def boundary_radius(self, theta: np.ndarray) -> np.ndarray:
        """Boundary radius (µm) in direction ``theta`` (rad)."""
        wave = np.zeros_like(theta)
        for order, amplitude, phase in self.harmonics:
            wave += amplitude * np.cos(order * theta + phase)
        return self.radius * (1.0 + wave)

    def depth(self, xy: np.ndarray) -> np.ndarray:
        """Approximate distance inside the islet boundary (µm; negative outside)."""
        d = xy - self.centre
        return self.boundary_radius(np.arctan2(d[:, 1], d[:, 0])) - np.hypot(d[:, 0], d[:, 1])


@dataclass
class _Cells:
    """Voronoi cells (local µm, warped frame) with their nucleus and nucleolus profiles."""

    seeds: np.ndarray  # (N, 2)
    kind: np.ndarray  # (N,) _ACINAR / _BETA / _ALPHA
    group: np.ndarray  # (N,) acinus id; -1 for islet cells
    apex: np.ndarray  # (N, 2) acinus centre (lumen) of acinar cells; the seed otherwise
    apex_reach: np.ndarray  # (N,) lumen-to-nucleus distance of acinar cells (µm)
    lumen_radius: np.ndarray  # (N,) lumen profile radius, 0 without lumen (µm)
    nuc_centre: np.ndarray  # (N, 2)
    nuc_axes: np.ndarray  # (N, 2) semi-axes a, b (µm); 0 without nucleus
    nuc_angle: np.ndarray  # (N,) rad
    het_fraction: np.ndarray  # (N,) interior heterochromatin area fraction
    nl_centre: np.ndarray  # (N, 2)
    nl_radius: np.ndarray  # (N,) µm, 0 without nucleolus
    gap_between_acini: float  # µm, full width
    gap_capsule: float  # µm, full width
    tree: cKDTree = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tree = cKDTree(self.seeds)

    def half_gap(self, i1: np.ndarray, i2: np.ndarray) -> np.ndarray:
        """Half width of the extracellular space between cells ``i1`` and ``i2`` (µm)."""
        g1, g2 = self.group[i1], self.group[i2]
        exocrine = (g1 >= 0) & (g2 >= 0)
        gap = np.where(exocrine, self.gap_between_acini, self.gap_capsule)
        return np.where(g1 == g2, 0.0, gap / 2)

    def membrane_distance(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Owner cell, second-nearest cell and distance to their bisector (µm) at ``q``."""
        d, idx = self.tree.query(q, k=2)
        i1, i2 = idx[:, 0], idx[:, 1]
        separation = np.linalg.norm(self.seeds[i2] - self.seeds[i1], axis=1)
        dm = (d[:, 1] ** 2 - d[:, 0] ** 2) / (2 * np.maximum(separation, 1e-9))
        return i1, i2, dm

    def nucleus_distance(self, q: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Approximate signed distance (µm) to the owner's nuclear envelope (< 0 inside)."""
        axes = self.nuc_axes[owner]
        has = axes[:, 0] > 0
        out = np.full(len(q), _FAR)
        if not has.any():
            return out
        d = q[has] - self.nuc_centre[owner[has]]
        c, s = np.cos(self.nuc_angle[owner[has]]), np.sin(self.nuc_angle[owner[has]])
        u, v = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        a, b = axes[has, 0], axes[has, 1]
        f = (u / a) ** 2 + (v / b) ** 2 - 1.0
        grad = 2.0 * np.hypot(u / a**2, v / b**2)
        out[has] = np.maximum(f / np.maximum(grad, 1e-9), -2 * np.maximum(a, b))
        return out



def _jittered_hex(rng: np.random.Generator, low: np.ndarray, high: np.ndarray,
                  spacing: float, jitter: float) -> np.ndarray:
    """Hexagonal lattice of ``spacing`` µm over a box, randomly shifted and jittered (µm)."""
    dy = spacing * math.sqrt(3) / 2
    ys = np.arange(low[1] - spacing, high[1] + spacing, dy) + rng.uniform(0, dy)
    xs = np.arange(low[0] - spacing, high[0] + spacing, spacing) + rng.uniform(0, spacing)
    gx, gy = np.meshgrid(xs, ys)
    gx = gx + (np.arange(len(ys))[:, None] % 2) * spacing / 2
    points = np.column_stack([gx.ravel(), gy.ravel()])
    points += _random_in_disc(rng, jitter * spacing, len(points))
    inside = np.all((points >= low) & (points <= high), axis=1)
    return points[inside]


def _make_islet(rng: np.random.Generator, params: SimulationParams) -> _Islet:
    """Islet whose boundary crosses the SEM field (centred on local 0) at a random place."""
    radius = rng.uniform(params.islet_radius_min_um, params.islet_radius_max_um)
    orders = np.arange(2, 6)
    harmonics = np.column_stack([
        orders, rng.uniform(0.0, 0.06, len(orders)) / orders * 2,
        rng.uniform(0.0, 2 * math.pi, len(orders)),
    ])
    islet = _Islet(np.zeros(2), radius, harmonics)
    phi = rng.uniform(0.0, 2 * math.pi)
    offset = rng.uniform(-1.0, 1.0) * params.islet_boundary_offset_max_frac * params.em_field_um
    reach = float(islet.boundary_radius(np.array([phi]))[0]) + offset
    islet.centre = -reach * np.array([math.cos(phi), math.sin(phi)])
    return islet


def _make_acini(rng: np.random.Generator, params: SimulationParams, low: np.ndarray,
                high: np.ndarray) -> dict[str, np.ndarray]:
    """Acinar cell seeds: rings of cells around acinus centres (lumina)."""
    size = params.acinar_cell_size_um
    centres = _jittered_hex(rng, low, high, 2.3 * size, 0.15)
    parts: dict[str, list[np.ndarray]] = {
        "seed": [np.zeros((0, 2))], "group": [np.zeros(0, int)], "apex": [np.zeros((0, 2))],
        "lumen": [np.zeros(0)]}
    for gid, centre in enumerate(centres):
        ring = 0.7 * size * rng.uniform(0.85, 1.15)
        n = max(4, round(2 * math.pi * ring / (0.75 * size)))
        angles = rng.uniform(0, 2 * math.pi) + (np.arange(n) + rng.uniform(-0.2, 0.2, n)) * (
            2 * math.pi / n)
        radii = ring * rng.uniform(0.9, 1.1, n)
        parts["seed"].append(centre + np.column_stack([np.cos(angles), np.sin(angles)])
                             * radii[:, None])
        parts["group"].append(np.full(n, gid))
        parts["apex"].append(np.tile(centre, (n, 1)))
        has_lumen = rng.uniform() < params.acinar_lumen_probability
        lumen = params.acinar_lumen_radius_um * rng.uniform(0.6, 1.4) * has_lumen
        parts["lumen"].append(np.full(n, lumen))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _make_cells(rng: np.random.Generator, params: SimulationParams, islet: _Islet,
                low: np.ndarray, high: np.ndarray) -> _Cells:
    """Exocrine and endocrine cell seeds, kinds and nuclei over the box ``low``–``high``."""
    acini = _make_acini(rng, params, low, high)
    margin = 0.25 * params.endocrine_cell_size_um
    keep = islet.depth(acini["seed"]) < -margin
    endo = _jittered_hex(rng, low, high, params.endocrine_cell_size_um, 0.2)
    endo_depth = islet.depth(endo)
    endo, endo_depth = endo[endo_depth > margin], endo_depth[endo_depth > margin]
    p_alpha = np.where(endo_depth < params.islet_mantle_width_um,
                       params.alpha_fraction_mantle, params.alpha_fraction_core)
    endo_kind = np.where(rng.uniform(size=len(endo)) < p_alpha, _ALPHA, _BETA)
    n_acinar = int(keep.sum())
    seeds = np.concatenate([acini["seed"][keep], endo])
    kind = np.concatenate([np.full(n_acinar, _ACINAR), endo_kind])
    apex = np.concatenate([acini["apex"][keep], endo])
    reach = np.linalg.norm(seeds - apex, axis=1)
    cells = _Cells(
        seeds=seeds,
        kind=kind,
        group=np.concatenate([acini["group"][keep], np.full(len(endo), -1)]),
        apex=apex,
        apex_reach=reach,
        lumen_radius=np.concatenate([acini["lumen"][keep], np.zeros(len(endo))]),
        nuc_centre=seeds.copy(),
        nuc_axes=np.zeros((len(seeds), 2)),
        nuc_angle=np.zeros(len(seeds)),
        het_fraction=np.zeros(len(seeds)),
        nl_centre=seeds.copy(),
        nl_radius=np.zeros(len(seeds)),
        gap_between_acini=params.interacinar_gap_um,
        gap_capsule=params.islet_capsule_gap_um,
    )
    _add_nuclei(rng, params, cells)
    return cells


def _clearance(cells: _Cells, points: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Distance (µm) from ``points`` to the nearest edge of their owner's Voronoi cell."""
    k = min(16, len(cells.seeds))
    _, neighbours = cells.tree.query(points, k=k)
    own = cells.seeds[owner][:, None, :]
    other = cells.seeds[neighbours]
    normal = other - own
    length = np.linalg.norm(normal, axis=2)
    midpoint = (own + other) / 2
    signed = np.einsum("nkd,nkd->nk", midpoint - points[:, None, :], normal) / np.maximum(
        length, 1e-9)
    signed[neighbours == owner[:, None]] = np.inf
    return signed.min(axis=1)


def _add_nuclei(rng: np.random.Generator, params: SimulationParams, cells: _Cells) -> None:
    """Nucleus and nucleolus profiles: random sections of spheres, fitted inside their cell."""
    n = len(cells.seeds)
    acinar = cells.kind == _ACINAR
    diameter = np.where(acinar, params.nucleus_diameter_acinar_um,
                        params.nucleus_diameter_endocrine_um) * rng.uniform(0.9, 1.1, n)
    cell_height = np.where(acinar, params.acinar_cell_size_um, params.endocrine_cell_size_um)
    height = rng.uniform(-0.5, 0.5, n) * cell_height  # section plane vs nucleus centre
    radius = np.sqrt(np.clip((diameter / 2) ** 2 - height**2, 0.0, None))
    outward = cells.seeds - cells.apex
    outward /= np.maximum(np.linalg.norm(outward, axis=1, keepdims=True), 1e-9)
    centre = np.where(
        acinar[:, None],
        cells.seeds + outward * 0.12 * params.acinar_cell_size_um,
        cells.seeds + _random_in_disc(rng, 0.08 * params.endocrine_cell_size_um, n),
    )
    aspect = rng.uniform(1.0, params.nucleus_aspect_max, n)
    axes = radius[:, None] * np.column_stack([np.sqrt(aspect), 1 / np.sqrt(aspect)])
    room = _clearance(cells, centre, np.arange(n)) - 0.4
    axes *= np.clip(room / np.maximum(axes[:, 0], 1e-9), 0.0, 1.0)[:, None]
    axes[axes[:, 1] < 0.5] = 0.0  # tiny caps are invisible: no nucleus in this section
    cells.nuc_centre = centre
    cells.nuc_axes = axes
    cells.nuc_angle = rng.uniform(0, math.pi, n)
    cells.het_fraction = params.heterochromatin_patch_fraction * np.where(
        acinar, 0.6, 1.3) * rng.uniform(0.6, 1.4, n)
    nl_diameter = np.where(acinar, params.nucleolus_diameter_acinar_um,
                           params.nucleolus_diameter_endocrine_um)
    nl_radius = nl_diameter / 2 * rng.uniform(0.7, 1.2, n) * np.sqrt(
        1 - rng.uniform(0.0, 0.8, n) ** 2)
    nl_radius = np.minimum(nl_radius, 0.4 * axes[:, 1])
    nl_radius[rng.uniform(size=n) >= params.nucleolus_probability] = 0.0
    free = np.clip(axes[:, 1] - nl_radius - 0.3, 0.0, None)
    cells.nl_centre = centre + _random_in_disc(rng, 1.0, n) * free[:, None]
    cells.nl_radius = np.where(free > 0, nl_radius, 0.0)


