"""Per-point coverage of every compartment, SEM stain density and FM fluorophore density."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import special

from .anatomy import (
    _ACINAR,
    _CYTO_LABEL,
    _CYTO_STAIN,
    _GRANULE_LABEL,
    _INSULIN,
    _MITO,
    _NUCLEAR_ENVELOPE_UM,
    _ZYMOGEN,
    LABELS,
    STAIN_DENSITY,
    _band,
    _cover,
    _mix,
    _stripes,
)

if TYPE_CHECKING:
    from .tissue import Tissue


class _Layers:
    """Per-point coverage (fraction of the pixel footprint) of every compartment.

    Args:
        tissue: the section's tissue.
        local: local points (µm, (N, 2)); cells and nuclei are evaluated at their warped
            position ``q``, organelles at ``local``.
        pitch: pixel footprint (µm).
        em: whether SEM-only detail (lamellae, cristae) is needed.
    """

    def __init__(self, tissue: Tissue, local: np.ndarray, pitch: float, em: bool) -> None:
        self.tissue, self.local, self.pitch, self.em = tissue, local, pitch, em
        self.q = tissue.warp(local)
        self.fine = tissue.textures.fine(self.q) if em else None  # granularity, unit std
        owner = self._cells()
        self.owner = owner
        self._nucleus(owner)
        self._rer(owner)
        self._organelles()

    def _cells(self) -> np.ndarray:
        cells, q, p = self.tissue.cells, self.q, self.pitch
        owner, other, dm = cells.membrane_distance(q)
        half = cells.half_gap(owner, other)
        thick = self.tissue.params.plasma_membrane_thickness_nm * 1e-3
        gap = _band(dm, -half, half, p)
        membrane = _band(dm, half, half + thick, p) + _band(-dm, half, half + thick, p)
        to_apex = np.linalg.norm(q - cells.apex[owner], axis=1)
        lumen_r = cells.lumen_radius[owner]
        has_lumen = lumen_r > 0
        lumen = np.where(has_lumen, _cover(to_apex - lumen_r, p), 0.0)
        membrane = np.maximum(membrane, np.where(
            has_lumen, _band(to_apex - lumen_r, 0.0, 2 * thick, p), 0.0))
        self.kind = cells.kind[owner]
        self.extracellular = np.maximum(gap, lumen)
        self.membrane = membrane
        self._owner_dm = dm - half
        self._to_apex = to_apex
        return owner

    def _nucleus(self, owner: np.ndarray) -> None:
        cells, p, tex = self.tissue.cells, self.pitch, self.tissue.textures
        params = self.tissue.params
        sd = cells.nucleus_distance(self.q, owner)
        n = len(self.q)
        self.nucleus = _cover(sd, p)
        self.envelope = _band(sd, -_NUCLEAR_ENVELOPE_UM, 0.0, p)
        self.heterochromatin = np.zeros(n)
        self.nucleolus = np.zeros(n)
        inside = np.flatnonzero(sd < p)
        if len(inside) == 0:
            return
        q, o = self.q[inside], owner[inside]
        depth = -sd[inside]
        rough = tex.wobble(q)  # ragged clump edges
        band = params.heterochromatin_band_um * np.clip(
            1.0 + 0.9 * tex.het_band(q) + 0.3 * rough, 0.0, 3.0)
        peripheral = _cover(depth - band, p)
        threshold = special.ndtri(1.0 - np.clip(cells.het_fraction[o], 1e-4, 0.9))
        patches = np.clip((tex.het_patch(q) + 0.35 * rough - threshold) / 0.25 + 0.5, 0.0, 1.0)
        nl_r = cells.nl_radius[o]
        to_nl = np.linalg.norm(q - cells.nl_centre[o], axis=1) - nl_r
        has_nl = nl_r > 0
        nucleolus = np.where(has_nl, _cover(to_nl, p), 0.0)
        ring = np.where(has_nl, _band(to_nl, 0.0, 0.6 * band, p), 0.0)
        self.heterochromatin[inside] = np.maximum.reduce([peripheral, patches, ring])
        self.nucleolus[inside] = nucleolus

    def _rer(self, owner: np.ndarray) -> None:
        cells, p, tex = self.tissue.cells, self.pitch, self.tissue.textures
        params = self.tissue.params
        self.rer = np.zeros(len(self.q))  # RNA-rich RER presence (0 … 1)
        self.rer_stain = np.zeros(len(self.q))  # SEM stain of the lamellae
        self.rer_opacity = np.zeros(len(self.q))  # RER presence with broken cisternae (SEM)
        acinar = np.flatnonzero((self.kind == _ACINAR) & (self.nucleus < 1.0))
        if len(acinar) == 0:
            return
        q = self.q[acinar]
        reach = cells.apex_reach[owner[acinar]]
        start = params.rer_zone_start_frac * reach
        zone = np.clip((self._to_apex[acinar] - start) / 1.0, 0.0, 1.0)
        patchy = np.clip(0.75 + 0.5 * tex.rer_patch(q), 0.0, 1.0)
        self.rer[acinar] = zone * patchy
        if self.em:
            period = params.rer_lamella_period_nm * 1e-3
            phase = 2 * math.pi * (self._to_apex[acinar] / period + 1.2 * tex.rer_bend(q))
            lamella = _stripes(phase, 0.4, period / p) * np.clip(
                0.8 + 0.3 * self.fine[acinar], 0.0, 1.0)
            self.rer_stain[acinar] = _mix(np.full(len(q), STAIN_DENSITY["rer_cisterna"]),
                                          STAIN_DENSITY["rer_lamella"], lamella)
            broken = np.clip((tex.wobble(q) + 0.9) / 0.4, 0.0, 1.0)
            self.rer_opacity[acinar] = self.rer[acinar] * broken

    def _organelles(self) -> None:
        org, p = self.tissue.organelles, self.pitch
        n = len(self.q)
        self.organelle = np.full(n, -1)
        self.outer, self.core, self.rim = np.zeros(n), np.zeros(n), np.zeros(n)
        self.inner_stain = np.zeros(n)
        candidates = np.flatnonzero((self.nucleus < 1.0) & (self.extracellular < 1.0))
        idx = org.nearest(self.local[candidates], p)
        found = idx >= 0
        pts, idx = candidates[found], idx[found]
        self.organelle[pts] = idx
        rel = self.local[pts] - org.centre[idx]
        mito = org.kind[idx] == _MITO
        self._discs(pts[~mito], idx[~mito], rel[~mito])
        self._mitochondria(pts[mito], idx[mito], rel[mito])

    def _discs(self, pts: np.ndarray, idx: np.ndarray, rel: np.ndarray) -> None:
        org, p = self.tissue.organelles, self.pitch
        thick = self.tissue.params.plasma_membrane_thickness_nm * 1e-3
        dist = np.linalg.norm(rel, axis=1) - org.radius[idx]
        to_core = np.linalg.norm(rel - org.core_offset[idx], axis=1) - org.core_radius[idx]
        self.outer[pts] = _cover(dist, p)
        self.rim[pts] = _band(dist, -thick, 0.0, p)
        self.core[pts] = np.where(org.core_radius[idx] > 0, _cover(to_core, p), 0.0)

    def _mitochondria(self, pts: np.ndarray, idx: np.ndarray, rel: np.ndarray) -> None:
        org, p = self.tissue.organelles, self.pitch
        params = self.tissue.params
        c, s = np.cos(org.angle[idx]), np.sin(org.angle[idx])
        u, v = c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]
        a, b = org.radius[idx], org.minor[idx]
        f = (u / a) ** 2 + (v / b) ** 2 - 1.0
        sd = f / np.maximum(2.0 * np.hypot(u / a**2, v / b**2), 1e-9)
        thick = 2 * params.plasma_membrane_thickness_nm * 1e-3
        self.outer[pts] = _cover(sd, p)
        self.rim[pts] = _band(sd, -thick, 0.0, p)
        if self.em:
            period = params.mitochondrion_crista_period_nm * 1e-3
            bend = 1.5 * self.tissue.textures.wobble(self.local[pts])
            cristae = _stripes(2 * math.pi * u / period + org.phase[idx] + bend, 0.35,
                               period / p)
            cristae *= _cover(sd + 2 * thick, p)
            self.inner_stain[pts] = _mix(np.full(len(pts), STAIN_DENSITY["mito_matrix"]),
                                         STAIN_DENSITY["mito_crista"], cristae)

    # ------------------------------------------------------------------ outputs

    def _granule_level(self) -> tuple[np.ndarray, np.ndarray]:
        """Stain of granule halo / mitochondrial interior and of dense cores, per point."""
        org = self.tissue.organelles
        has = self.organelle >= 0
        idx = np.where(has, self.organelle, 0)
        kind = np.where(has, org.kind[idx] if len(org.kind) else 0, -1)
        halo = np.where(kind == _MITO, self.inner_stain, STAIN_DENSITY["insulin_halo"])
        core = np.where(has, org.level[idx] if len(org.level) else 0.0, 0.0)
        return halo, core

    def em_outputs(self) -> dict[str, np.ndarray]:
        """Stain density (0 = resin) and tissue class label per point.

        Chromatin contrast against the cytoplasm is scaled by ``em_chromatin_contrast``
        (skipped at 1, the default model, so that its output is unchanged).
        """
        fine = self.fine
        cytoplasm = _CYTO_STAIN[self.kind] + 0.035 * fine
        stain = cytoplasm
        stain = _mix(stain, self.rer_stain, self.rer_opacity)
        halo, core_level = self._granule_level()
        stain = _mix(stain, halo, self.outer)
        stain = _mix(stain, core_level, self.core)
        stain = _mix(stain, STAIN_DENSITY["granule_membrane"], self.rim)
        chromatin = _mix(STAIN_DENSITY["euchromatin"] + 0.05 * fine,
                         STAIN_DENSITY["heterochromatin"] + 0.04 * fine, self.heterochromatin)
        contrast = self.tissue.params.em_chromatin_contrast
        if contrast != 1.0:
            chromatin = _mix(cytoplasm, chromatin, contrast)
        chromatin = _mix(chromatin, STAIN_DENSITY["nucleolus"] + 0.08 * fine, self.nucleolus)
        stain = _mix(stain, chromatin, self.nucleus)
        stain = _mix(stain, STAIN_DENSITY["nuclear_envelope"], self.envelope)
        matrix = np.full(len(stain), STAIN_DENSITY["extracellular"])
        gap = np.flatnonzero(self.extracellular > 0)
        matrix[gap] += 0.06 * np.clip(self.tissue.textures.fibrils(self.q[gap]), 0.0, None)
        stain = _mix(stain, matrix, self.extracellular)
        stain = _mix(stain, STAIN_DENSITY["membrane"], self.membrane)
        return {"stain": stain.astype(np.float32), "label": self._labels()}

    def _labels(self) -> np.ndarray:
        """Tissue class per point, later layers win where they cover ≥ half the pixel."""
        org = self.tissue.organelles
        label = _CYTO_LABEL[self.kind].copy()
        label[self.rer > 0.5] = LABELS["rough_er"]
        has = self.organelle >= 0
        kind = org.kind[self.organelle[has]] if len(org.kind) else np.zeros(0, int)
        organelle_label = label[has]
        organelle_label[self.outer[has] >= 0.5] = _GRANULE_LABEL[kind[self.outer[has] >= 0.5]]
        label[has] = organelle_label
        nucleus = self.nucleus >= 0.5
        label[nucleus] = LABELS["euchromatin"]
        label[nucleus & (self.heterochromatin >= 0.5)] = LABELS["heterochromatin"]
        label[nucleus & (self.nucleolus >= 0.5)] = LABELS["nucleolus"]
        label[self.envelope >= 0.5] = LABELS["nuclear_envelope"]
        label[self.extracellular >= 0.5] = LABELS["extracellular"]
        label[self.membrane >= 0.5] = LABELS["membrane"]
        return label

    def fm_outputs(self) -> dict[str, np.ndarray]:
        """Fluorophore densities per point (true, labelling factors included).

        ``dna``: DNA × the nucleus's Hoechst staining factor; ``rna``: RER RNA; ``insulin``:
        insulin cores of beta cells × the cell's and the granule's labelling factors;
        ``tissue``: tissue presence; ``autofluorescence``: tissue presence with zymogen
        granules weighted by ``zymogen_autofluorescence_ratio``.
        """
        params, org = self.tissue.params, self.tissue.organelles
        labelling = self.tissue.labelling
        tissue = 1.0 - self.extracellular
        dna = self.nucleus * (1.0 + (params.heterochromatin_dna_ratio - 1.0)
                              * self.heterochromatin)
        dna *= 1.0 - (1.0 - params.nucleolus_dna_ratio) * self.nucleolus
        dna *= labelling.hoechst_nucleus[self.owner]
        rna = self.rer * (1.0 - self.nucleus) * (1.0 - self.outer) * tissue
        has = self.organelle >= 0
        kind = np.full(len(self.q), -1)
        kind[has] = org.kind[self.organelle[has]]
        factor = np.zeros(len(self.q))
        factor[has] = labelling.insulin_organelle[self.organelle[has]]
        insulin = np.where(kind == _INSULIN, self.core * factor, 0.0) * (1.0 - self.nucleus)
        zymogen = np.where(kind == _ZYMOGEN, self.outer, 0.0)
        autofluorescence = tissue + (params.zymogen_autofluorescence_ratio - 1.0) * zymogen
        return {
            "dna": dna.astype(np.float32),
            "rna": rna.astype(np.float32),
            "insulin": insulin.astype(np.float32),
            "tissue": tissue.astype(np.float32),
            "autofluorescence": autofluorescence.astype(np.float32),
        }


