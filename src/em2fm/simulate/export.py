"""Odemis exports and ground truth of a simulated section; the rule's entry point."""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np

from .. import io
from ..geometry import ImageGeometry, moving_to_fixed_px
from ..odemis import Channel, OdemisImage, write_file, write_per_stream
from .anatomy import LABELS
from .params import SimulationParams
from .section import SimulatedSection, section_fm_acquisition, simulate_section

log = logging.getLogger(__name__)


_ACQUISITION_DATE = "2026-01-15T09:00:00"  # fixed: same config and seed → same files


def odemis_images(sim: SimulatedSection, params: SimulationParams,
                  index: int) -> list[OdemisImage]:
    """Section ``index`` as Odemis would export it: one merged FM image and the SEM image.

    The FM carries the METADATA placement (with the stage error), as a real export would.
    """
    fm_g, em_g = sim.fm_geometry_meta, sim.em_geometry
    date = _dt.datetime.fromisoformat(_ACQUISITION_DATE) + _dt.timedelta(hours=index)
    channels = [Channel(n, ex, em) for n, ex, em in sim.channels]
    fm = OdemisImage(
        name=channels[-1].name, data=sim.fm, channels=channels, shape_cyx=sim.fm.shape,
        dtype="uint16", pixel_size_m=fm_g.pixel_size_m, centre_m=fm_g.centre_m,
        rotation_rad=fm_g.rotation_rad, acquisition_date=date.isoformat(),
        significant_bits=params.fm_significant_bits, detector="em2fm simulated sCMOS camera",
        extra_settings={"Stage": {"position": [{"x": fm_g.centre_m[0],
                                                "y": fm_g.centre_m[1]}, "m"]}},
    )
    em = OdemisImage(
        name="Backscattered electrons", data=sim.em[None], channels=[
            Channel("Backscattered electrons")],
        shape_cyx=(1, *sim.em.shape), dtype="uint16", pixel_size_m=em_g.pixel_size_m,
        centre_m=em_g.centre_m, rotation_rad=em_g.rotation_rad,
        acquisition_date=(date + _dt.timedelta(minutes=5)).isoformat(),
        exposure_time_s=sim.em_dwell_time_s, voltage_v=sim.em_voltage_v,
        current_a=sim.em_current_a, significant_bits=params.em_significant_bits,
        detector="em2fm simulated SEM (backscattered electrons)",
        extra_settings={"E-beam": {"accelVoltage": [sim.em_voltage_v, "V"],
                                   "dwellTime": [sim.em_dwell_time_s, "s"]},
                        "Stage": {"position": [{"x": em_g.centre_m[0],
                                                "y": em_g.centre_m[1]}, "m"]}},
    )
    return [fm, em]


def montage_layout(n_px: int, tiles: int, overlap: float, jitter_px: float,
                   rng: np.random.Generator) -> tuple[int, list[tuple[int, int, int, int]]]:
    """Tile size and (row index, col index, row px, col px) of an SEM montage of an n² field.

    Tiles overlap by ``overlap`` of their size; interior tile edges are displaced by up to
    ``jitter_px`` (integer px); the outer tiles touch the field's edges, so the montage
    covers exactly the simulated field (the same frame as the truth).
    """
    size = int((n_px - 2 * jitter_px - 1) // (tiles - (tiles - 1) * overlap)) if tiles > 1 \
        else n_px
    step = (n_px - size) / max(1, tiles - 1)
    out = []
    for i in range(tiles):
        for j in range(tiles):
            pos = []
            for k in (i, j):
                if k == 0:
                    pos.append(0)
                elif k == tiles - 1:
                    pos.append(n_px - size)
                else:
                    pos.append(round(k * step + rng.uniform(-jitter_px, jitter_px)))
            out.append((i, j, pos[0], pos[1]))
    return size, out


def montage_images(em: OdemisImage, montage: dict, rng: np.random.Generator
                   ) -> tuple[list[OdemisImage], dict]:
    """The SEM image cut into an overlapping montage, each tile with a noisy stage position.

    Returns the tiles (named ``tile-CCCCCxRRRRR``) and their truth (offsets in SEM px).
    """
    assert em.data is not None
    g = em.geometry
    n = min(em.shape_cyx[1:])
    size, layout = montage_layout(n, int(montage.get("tiles", 3)),
                                  float(montage.get("overlap", 0.1)),
                                  float(montage.get("jitter_px", 4.0)), rng)
    err = float(montage.get("stage_error_nm", 20.0)) * 1e-9
    tiles, truth = [], []
    for i, j, r, c in layout:
        centre = g.pixel_to_stage() @ np.array([c + (size - 1) / 2, r + (size - 1) / 2, 1.0])
        recorded = (float(centre[0] + rng.normal(0, err)), float(centre[1] + rng.normal(0, err)))
        name = f"tile-{j:05d}x{i:05d}"
        tiles.append(OdemisImage(**{**em.__dict__, "name": name,
                                    "data": em.data[:, r: r + size, c: c + size].copy(),
                                    "shape_cyx": (1, size, size), "centre_m": recorded,
                                    "extra_settings": {**em.extra_settings, "Stage": {
                                        "position": [{"x": recorded[0], "y": recorded[1]},
                                                     "m"]}}}))
        truth.append({"name": name, "offset_px": [r, c], "stage_centre_true_m":
                      [float(centre[0]), float(centre[1])], "stage_centre_recorded_m":
                      list(recorded)})
    return tiles, {"tile_size_px": size, "tiles": truth}


def truth_metadata(sim: SimulatedSection, params: SimulationParams, index: int,
                   seed: int) -> dict:
    """Ground truth kept apart from the exports (read by evaluation only)."""
    def geom(g: ImageGeometry) -> dict:
        return {"shape": list(g.shape_yx), "pixel_size_m": list(g.pixel_size_m),
                "centre_m": list(g.centre_m), "rotation_rad": g.rotation_rad}

    return {
        "section": sim.name,
        "index": index,
        "seed": seed,
        "fm_to_em_px": moving_to_fixed_px(sim.fm_geometry_true, sim.em_geometry),
        "fm_to_em_px_metadata": moving_to_fixed_px(sim.fm_geometry_meta, sim.em_geometry),
        "fm_pixel_size_error_frac": (sim.fm_geometry_true.pixel_size_m[0]
                                     / sim.fm_geometry_meta.pixel_size_m[0] - 1.0),
        "fm_geometry_true": geom(sim.fm_geometry_true),
        "fm_geometry_metadata": geom(sim.fm_geometry_meta),
        "em_geometry": geom(sim.em_geometry),
        "channels": [{"name": n, "excitation_nm": ex, "emission_nm": em}
                     for n, ex, em in sim.channels],
        "labels": LABELS,
        "fm_acquisition": section_fm_acquisition(params, index, seed).as_dict(),
        "params": {f.name: getattr(params, f.name) for f in fields(params)},
    }


def run(section: str, index: int, seed: int, physics: dict, variant: str,
        exports_dir: str | Path, truth_json: str | Path, truth_npz: str | Path,
        montage: dict | None = None) -> None:
    """Simulate one section; write its Odemis exports and, apart, its ground truth.

    Args:
        section: section name (folder name of the exports).
        index: section index (with ``seed``, selects the random tissue).
        seed: workflow seed.
        physics: the ``simulate.params`` config mapping (defaults for missing keys).
        variant: ``gui`` (one GUI acquisition file), ``per-stream`` (one file per stream)
            or ``tiled`` (``CLEM-grid/`` FM, ``EM-grid/`` SEM montage tiles).
        exports_dir: folder to create with the section's exports.
        truth_json: true transforms and parameters.
        truth_npz: noise-free FM (``fm_clean``, ``fm_specific``), ``em_clean``, ``labels``.
        montage: tiled variant: ``tiles`` per side, ``overlap``, ``jitter_px``,
            ``stage_error_nm`` (config ``simulate.montage``).
    """
    params = SimulationParams.from_config(physics)
    sim = simulate_section(params, index, seed, name=section)
    images = odemis_images(sim, params, index)
    out = Path(exports_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if variant == "gui":
            write_file(tmp / f"{section}.ome.tiff", images, thumbnail=True)
        elif variant == "per-stream":
            write_per_stream(tmp, section, images)
        elif variant == "tiled":
            rng = np.random.default_rng(np.random.SeedSequence([seed, index, 8]))
            tiles, montage_truth = montage_images(images[1], montage or {}, rng)
            (tmp / "CLEM-grid").mkdir()
            (tmp / "EM-grid").mkdir()
            write_file(tmp / "CLEM-grid" / "tile-00000x00000.ome.tiff", images[:1])
            for tile in tiles:
                write_file(tmp / "EM-grid" / f"{tile.name}.ome.tiff", [tile], thumbnail=False)
        else:
            raise ValueError(f"simulate.variant must be gui, per-stream or tiled, not "
                             f"{variant!r}")
        io.save_npz(truth_npz, fm_clean=sim.fm_clean, fm_specific=sim.fm_specific,
                    em_clean=sim.em_clean, labels=sim.labels)
        truth = truth_metadata(sim, params, index, seed)
        if variant == "tiled":
            truth["em_montage"] = montage_truth
        io.write_json(truth_json, truth)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: wrote %s export to %s", section, variant, out)
