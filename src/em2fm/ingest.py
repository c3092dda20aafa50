"""Ingest: validate one section's Odemis exports and convert them to internal files.

Input: a section folder with OME-TIFF files written by Odemis, in one of the
variants of ``odemis-export.md``: one GUI acquisition file (thumbnail + FM +
SEM), one file per stream (``name_Hoechst.ome.tiff`` …), or a serialized
export (``name.0.ome.tiff`` … linked by UUID).

FM channels are recognised by their excitation (and, if configured, emission)
wavelength, never by stream name, which users edit freely.

Output:
- ``{section}.json``: metadata as stored in the export (SI units, stage frame,
  Odemis conventions), the variant, dialect, files and warnings; ``"fm": null``
  for an EM-only section;
- ``{section}.npz``: ``em`` (Y, X) and ``fm`` (C, Y, X) pixel arrays, the FM
  channels in configured order (no ``fm`` for an EM-only section).

Bounded memory: the SEM is never in memory whole. Its page (or every montage tile's) is
read region by region (:func:`em2fm.lazy.open_plane`: only the TIFF strips or tiles a
region touches are decoded), montage seams are measured on the overlaps only, and the
``em`` member of the npz is written band by band (:class:`em2fm.io.NpzWriter`). Only the
configured FM channels are decoded (they are small).

A ``predict`` section (role from the section sheet, or a folder without FM) is
EM only: its FM, if any, is never used (a file holding FM only is not decoded;
a GUI acquisition file is decoded whole, its FM ignored).

Implausible input stops with an error naming the file: an FM pixel not larger
than the SEM pixel (the network predicts coarse FM from fine EM), a configured
FM channel that is constant (all zero: not acquired), non-square SEM pixels
(the EM grids are isotropic). Non-square FM pixels are resampled and reported
as a warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import io, montage
from .geometry import apply_affine, moving_to_fixed_px
from .lazy import open_plane
from .odemis import Channel, ExportError, OdemisFile, OdemisImage, read_file
from .sections import export_files

log = logging.getLogger(__name__)

GEOMETRY_RTOL = 1e-6  # relative tolerance on pixel sizes of merged channels
POSITION_ATOL_M = 1e-9  # 1 nm: channels of one acquisition share one position


@dataclass(frozen=True)
class DyeSpec:
    """A configured fluorescence channel, matched by wavelength (nm)."""

    name: str
    excitation_nm: float
    emission_nm: float | None = None


@dataclass
class IngestedSection:
    """The validated content of one section."""

    section: str
    variant: str
    dialect: str
    files: list[str]
    warnings: list[str]
    em: OdemisImage
    fm: OdemisImage | None  # channels in configured order, data (C, Y, X); None: EM only
    fm_sources: list[str]  # stream name of each FM channel in the export
    montage: dict | None = None  # stitching of EM-grid tiles (em2fm.montage), if any
    em_reader: montage.RegionReader | None = None  # the SEM pixels, read region by region
    name: str | None = None  # the section folder's name (display), when it differs
    role: str | None = None  # train, val, test or predict

    def metadata(self) -> dict:
        """The ``{section}.json`` content."""
        return {
            "section": self.section,
            "variant": self.variant,
            "dialect": self.dialect,
            "files": self.files,
            "name": self.name or self.section,
            "role": self.role,
            "warnings": self.warnings,
            "fm": None if self.fm is None else {
                **_image_metadata(self.fm),
                "channels": [
                    {"name": c.name, "excitation_nm": c.excitation_nm,
                     "emission_nm": c.emission_nm, "stream_name": src}
                    for c, src in zip(self.fm.channels, self.fm_sources, strict=True)
                ],
            },
            "em": {
                **_image_metadata(self.em),
                "shape": list(self.em.shape_cyx[1:]),
                "name": self.em.name,
                "dwell_time_s": self.em.exposure_time_s,
                "voltage_v": self.em.voltage_v,
                "current_a": self.em.current_a,
            },
            **({"montage": self.montage} if self.montage is not None else {}),
        }

    def em_array(self) -> np.ndarray:
        """The whole SEM image (Y, X), read from its reader (small sections and tests)."""
        assert self.em_reader is not None
        h, w = self.em_reader.shape
        return np.asarray(self.em_reader.read(0, h, 0, w))


def _image_metadata(img: OdemisImage) -> dict:
    assert img.pixel_size_m is not None and img.centre_m is not None
    return {
        "shape": list(img.shape_cyx),
        "dtype": img.dtype,
        "pixel_size_m": list(img.pixel_size_m),
        "centre_m": list(img.centre_m),
        "rotation_rad": img.rotation_rad,
        "shear": img.shear,
        "acquisition_date": img.acquisition_date,
        "source": img.source,
    }


def dyes_from_config(channels: list[str], dyes: dict[str, dict]) -> list[DyeSpec]:
    """The configured channels (names) resolved against the ``dyes`` catalogue."""
    out = []
    for name in channels:
        if name not in dyes:
            raise ExportError(
                "config.yaml", f"channel {name!r} is not in the dyes catalogue {sorted(dyes)}",
                f"add it, e.g. --config 'dyes={{{name}: {{excitation_nm: 488}}}}'",
            )
        d = dyes[name]
        out.append(DyeSpec(name=name, excitation_nm=float(d["excitation_nm"]),
                           emission_nm=None if d.get("emission_nm") is None
                           else float(d["emission_nm"])))
    return out


def _variant(files: list[OdemisFile]) -> str:
    if len(files) == 1:
        return "gui-acquisition" if files[0].has_thumbnail else "single-file"
    if any("read from there" in w for f in files for w in f.warnings):
        return "serialized"
    return "per-stream"


def _describe_channels(images: list[OdemisImage]) -> str:
    parts = []
    for img in images:
        for c in img.channels:
            if c.is_fluorescence:
                parts.append(f"{c.name!r} (ex {c.excitation_nm:g} nm, em "
                             f"{c.emission_nm if c.emission_nm is None else f'{c.emission_nm:g}'}"
                             f" nm) in {Path(img.source).name}")
    return "; ".join(parts) or "none"


def _match_channel(
    dye: DyeSpec, fm_images: list[OdemisImage], tolerance_nm: float, folder: Path
) -> tuple[OdemisImage, int]:
    """Find the one FM channel whose wavelengths match ``dye`` within tolerance."""
    hits = []
    for img in fm_images:
        for ci, ch in enumerate(img.channels):
            if ch.excitation_nm is None:
                continue
            if abs(ch.excitation_nm - dye.excitation_nm) > tolerance_nm:
                continue
            if (dye.emission_nm is not None and ch.emission_nm is not None
                    and abs(ch.emission_nm - dye.emission_nm) > tolerance_nm):
                continue
            hits.append((img, ci))
    where = folder if not fm_images else Path(fm_images[0].source)
    if not hits:
        raise ExportError(
            where,
            f"no FM channel matches {dye.name!r} (excitation {dye.excitation_nm:g} nm "
            f"± {tolerance_nm:g} nm); channels found: {_describe_channels(fm_images)}",
            f"set dyes.{dye.name}.excitation_nm to the wavelength used, or choose other "
            "channels, e.g. --config 'channels=[Hoechst]' (with model=PATH the channels are "
            "the model's), or give the section the role predict (EM only) in the section "
            "sheet",
        )
    if len(hits) > 1:
        # the same stream exported twice (e.g. GUI file + per-stream file) is fine if identical
        first = hits[0]
        if not all(_same_channel(first, h) for h in hits[1:]):
            raise ExportError(
                Path(hits[1][0].source),
                f"{len(hits)} FM channels match {dye.name!r}: "
                + ", ".join(f"{h[0].channels[h[1]].name!r} in {Path(h[0].source).name}"
                            for h in hits),
                f"keep one export per stream in the section folder, or set "
                f"dyes.{dye.name}.emission_nm to tell them apart",
            )
    return hits[0]


def fm_plane(img: OdemisImage, ci: int) -> np.ndarray:
    """Channel ``ci`` of an FM image: from ``img.data`` when loaded, else decoded from its page.

    Decoded planes are kept for the current :func:`ingest_section` call, so each FM
    channel is decoded at most once and other channels (and the SEM) of a file never.
    """
    if img.data is not None:
        return img.data[ci]
    cache = _PLANES
    key = (img.source, img.ifds[ci])
    if key not in cache:
        try:
            reader = open_plane(img, ci)
        except ValueError as exc:
            raise ExportError(img.source, str(exc).split(": ", 1)[-1],
                              "re-export the acquisition from Odemis") from exc
        try:
            cache[key] = reader.read(0, reader.shape[0], 0, reader.shape[1])
        except ValueError as exc:
            raise ExportError(img.source, f"cannot decode page {img.ifds[ci]} (channel "
                              f"{ci}): {exc}", "install the 'imagecodecs' package (needed "
                              "for LZW-compressed pages)") from exc
        finally:
            reader.close()
    return cache[key]


_PLANES: dict[tuple[str, int], np.ndarray] = {}  # FM planes decoded in this ingest


def _same_channel(a: tuple[OdemisImage, int], b: tuple[OdemisImage, int]) -> bool:
    ia, ca = a
    ib, cb = b
    return (np.array_equal(fm_plane(ia, ca), fm_plane(ib, cb))
            and ia.centre_m == ib.centre_m)


def _check_placement(img: OdemisImage, what: str) -> None:
    if img.pixel_size_m is None:
        raise ExportError(
            img.source, f"the {what} image {img.name!r} has no pixel size "
            "(Pixels@PhysicalSizeX/Y missing)",
            "re-export from Odemis with the calibrated pixel size, or add PhysicalSizeX/Y "
            "(in µm) to the OME-XML of a copy",
        )
    if not all(math.isfinite(v) and v > 0 for v in img.pixel_size_m):
        raise ExportError(img.source, f"the {what} image {img.name!r} has a non-positive pixel "
                          f"size {img.pixel_size_m} m", "re-export with a calibrated pixel size")
    if img.centre_m is None:
        raise ExportError(
            img.source, f"the {what} image {img.name!r} has no stage position "
            "(Plane@PositionX/Y missing)",
            "re-export from Odemis with stage metadata; FM and EM are aligned by stage position",
        )


def _same_placement(a: OdemisImage, b: OdemisImage) -> bool:
    assert a.pixel_size_m and b.pixel_size_m and a.centre_m and b.centre_m
    return (
        a.shape_cyx[1:] == b.shape_cyx[1:]
        and np.allclose(a.pixel_size_m, b.pixel_size_m, rtol=GEOMETRY_RTOL, atol=0)
        and np.allclose(a.centre_m, b.centre_m, rtol=0, atol=POSITION_ATOL_M)
        and math.isclose(a.rotation_rad, b.rotation_rad, abs_tol=1e-9)
        and math.isclose(a.shear, b.shear, abs_tol=1e-9)
    )


def _select_em(em_images: list[OdemisImage], em_stream: str | None, folder: Path,
               warnings: list[str]) -> OdemisImage:
    if em_stream:
        chosen = [i for i in em_images if i.name == em_stream]
        if not chosen:
            raise ExportError(
                folder, f"no SEM image named {em_stream!r}; SEM images found: "
                f"{[i.name for i in em_images]}",
                "set ingest.em_stream to one of those names, or to null to take the finest",
            )
        return chosen[0]
    if not em_images:
        raise ExportError(
            folder, "no SEM image (an image without excitation/emission wavelengths) in "
            "the section's exports",
            "add the SEM acquisition of this section to its folder (GUI acquisition file or "
            "the per-stream SEM file)",
        )
    finest = min(em_images, key=lambda i: (i.pixel_size_m or (math.inf,))[0])
    if len(em_images) > 1:
        warnings.append(
            f"{len(em_images)} SEM images found ({[i.name for i in em_images]}); using the "
            f"finest, {finest.name!r}; set ingest.em_stream to choose"
        )
    return finest


def ingest_section(
    folder: str | Path,
    section: str,
    dyes: list[DyeSpec],
    wavelength_tolerance_nm: float = 20.0,
    em_stream: str | None = None,
    read_fm: bool = True,
) -> IngestedSection:
    """Read and validate all exports of one section.

    Args:
        folder: the section folder (its OME-TIFF files are found recursively).
        section: section name.
        dyes: the FM channels to extract, in output order.
        wavelength_tolerance_nm: allowed |Δλ| in nm when matching wavelengths.
        em_stream: name of the SEM stream to use when there are several.
        read_fm: False for a ``predict`` section: only the EM is read (``fm`` None).

    Raises:
        ExportError: one message naming the file, the problem and the fix.
    """
    folder = Path(folder)
    paths = export_files(folder)
    if not paths:
        raise ExportError(folder, "no OME-TIFF export (*.ome.tiff) in the section folder",
                          "export the section's acquisitions from Odemis as OME-TIFF into "
                          "this folder")
    _PLANES.clear()
    # metadata only: the SEM is read region by region, the selected FM channels on demand
    files = [read_file(p, load_pixels=False) for p in paths]
    warnings = [f"{Path(f.path).name}: {w}" for f in files for w in f.warnings]
    dialects = sorted({f.dialect for f in files})
    images = [img for f in files for img in f.images]
    fm_images = [i for i in images if i.is_fluorescence]
    em_images = [i for i in images if not i.is_fluorescence]
    grid_tiles = [i for i in em_images if montage.is_grid_tile(i)] if not em_stream else []
    stitched = None
    if grid_tiles:  # array tomography: the SEM is a montage of EM-grid/ tiles
        others = [i.name for i in em_images if not montage.is_grid_tile(i)]
        if others:
            warnings.append(f"SEM images outside EM-grid/ not used ({others}): the EM-grid "
                            "montage is; set ingest.em_stream to use one of them instead")
        em, stitched, em_reader = montage.assemble(grid_tiles)
        warnings.extend(montage.doubts(stitched))
    else:
        em = _select_em([i for i in em_images if not montage.is_grid_tile(i)] or em_images,
                        em_stream, folder, warnings)
        try:
            em_reader = open_plane(em, 0)
        except ValueError as exc:
            raise ExportError(em.source, str(exc).split(": ", 1)[-1],
                              "re-export the acquisition from Odemis") from exc
    _check_placement(em, "SEM")
    _check_square(em, "SEM", warnings)
    common = {"section": section, "variant": _variant(files),
              "dialect": dialects[0] if len(dialects) == 1 else "+".join(dialects),
              "files": [str(p) for p in paths], "warnings": warnings, "em": em,
              "montage": stitched, "em_reader": em_reader}
    if not read_fm:
        if fm_images:
            warnings.append("role predict: the FM in the exports is not read")
        return IngestedSection(**common, fm=None, fm_sources=[])
    if not fm_images:
        raise ExportError(
            folder, "no fluorescence image (no channel with Excitation/EmissionWavelength) in "
            "the section's exports, but the section is used for training or evaluation",
            "add the FM acquisition of this section to its folder, or give the section the "
            "role predict in the section sheet (EM only)",
        )
    selected = [_match_channel(d, fm_images, wavelength_tolerance_nm, folder) for d in dyes]
    for img, _ in selected:
        _check_placement(img, "FM")
    ref = selected[0][0]
    for img, ci in selected[1:]:
        if not _same_placement(ref, img):
            raise ExportError(
                img.source,
                f"FM channel {img.channels[ci].name!r} is placed differently from "
                f"{ref.channels[selected[0][1]].name!r} (shape, pixel size, position or "
                "rotation differ)",
                "use FM channels of one acquisition (same stage position) for one section",
            )
    data = np.stack([fm_plane(img, ci) for img, ci in selected])
    channels = [
        Channel(name=d.name, excitation_nm=img.channels[ci].excitation_nm,
                               emission_nm=img.channels[ci].emission_nm)
        for d, (img, ci) in zip(dyes, selected, strict=True)
    ]
    fm = OdemisImage(**{**ref.__dict__, "data": data, "channels": channels,
                        "shape_cyx": data.shape, "name": "+".join(d.name for d in dyes)})
    _check_square(fm, "FM", warnings)
    _check_scales(fm, em)
    for (img, ci), d in zip(selected, dyes, strict=True):
        _check_signal(img, ci, d.name)
    _check_overlap(fm, em)
    return IngestedSection(**common, fm=fm,
                           fm_sources=[img.channels[ci].name for img, ci in selected])


SQUARE_RTOL = 0.01  # pixels whose x and y sizes differ by more are not square


def _check_square(img: OdemisImage, what: str, warnings: list[str]) -> None:
    """SEM pixels must be square (isotropic EM grids); non-square FM pixels are a warning."""
    assert img.pixel_size_m is not None
    px, py = img.pixel_size_m
    if math.isclose(px, py, rel_tol=SQUARE_RTOL):
        return
    text = (f"the {what} image {img.name!r} has non-square pixels "
            f"({px * 1e9:.3g} × {py * 1e9:.3g} nm)")
    if what == "SEM":
        raise ExportError(img.source, f"{text}; the EM input grid must be isotropic",
                          "re-export with the calibrated (square) pixel size, or resample "
                          "the SEM image to square pixels")
    warnings.append(f"{text}: resampled onto square target pixels of "
                    f"{px * 1e9:.3g} nm (x)")


def _check_scales(fm: OdemisImage, em: OdemisImage) -> None:
    """The FM pixel must be larger than the SEM pixel (coarse FM predicted from fine EM)."""
    assert fm.pixel_size_m is not None and em.pixel_size_m is not None
    if fm.pixel_size_m[0] <= em.pixel_size_m[0]:
        raise ExportError(
            fm.source,
            f"the FM pixel ({fm.pixel_size_m[0] * 1e9:.4g} nm) is not larger than the SEM "
            f"pixel ({em.pixel_size_m[0] * 1e9:.4g} nm of {Path(em.source).name}); the "
            "network predicts coarse FM from finer EM",
            "check the pixel sizes (Pixels@PhysicalSizeX) of both exports: a swapped or "
            "uncalibrated pixel size, or the wrong SEM stream (ingest.em_stream)",
        )


def _check_signal(img: OdemisImage, ci: int, name: str) -> None:
    """A configured FM channel must not be constant (all zero: not acquired or exported)."""
    plane = fm_plane(img, ci)
    lo, hi = float(plane.min()), float(plane.max())
    if lo == hi:
        raise ExportError(
            img.source,
            f"FM channel {name!r} (stream {img.channels[ci].name!r}) is constant "
            f"({'all zero' if hi == 0 else f'every pixel {hi:g}'}): it was not acquired or "
            "not exported",
            f"re-export the channel, leave it out (channels without {name!r}), or give this "
            "section the role predict (EM only) in the section sheet",
        )


def _check_overlap(fm: OdemisImage, em: OdemisImage) -> None:
    """The FM field must cover part of the EM field (by stage metadata)."""
    m = moving_to_fixed_px(fm.geometry, em.geometry)
    _, fy, fx = fm.shape_cyx
    corners = apply_affine(m, np.array([[-0.5, -0.5], [fx - 0.5, -0.5],
                                        [fx - 0.5, fy - 0.5], [-0.5, fy - 0.5]]))
    _, ey, ex = em.shape_cyx
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    if hi[0] < -0.5 or hi[1] < -0.5 or lo[0] > ex - 0.5 or lo[1] > ey - 0.5:
        raise ExportError(
            fm.source,
            f"by stage metadata the FM image (centre {fm.centre_m} m) does not overlap the SEM "
            f"image (centre {em.centre_m} m)",
            "check that both exports belong to the same section and carry stage positions",
        )


BAND_PX = 1 << 22  # EM px per band written to the npz (4 Mpx: 8 MiB of uint16)
BLOCK_COLS = 4096  # EM columns read at a time within a band (montage: per-pixel buffers)


def write_em(writer: io.NpzWriter, reader: montage.RegionReader, dtype: np.dtype | str,
             band_px: int | None = None) -> None:
    """Member ``em`` of ``writer`` from ``reader``, band by band (blocks of columns)."""
    h, w = reader.shape
    rows = max(1, (band_px or BAND_PX) // max(w, 1))
    if rows >= 256:
        rows -= rows % 256  # whole TIFF tiles/strips of 256 rows per band
    with writer.member("em", (h, w), dtype) as write:
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            band = np.empty((r1 - r0, w), dtype)
            for c0 in range(0, w, BLOCK_COLS):
                c1 = min(w, c0 + BLOCK_COLS)
                band[:, c0:c1] = reader.read(r0, r1, c0, c1)
            write(band)


def write_outputs(result: IngestedSection, json_path: str | Path, npz_path: str | Path) -> None:
    """Write ``{section}.npz`` (em, fm pixels; em only without FM) and ``{section}.json``.

    The ``em`` member is streamed band by band from the section's reader.
    """
    assert result.em_reader is not None
    with io.npz_writer(npz_path) as writer:
        write_em(writer, result.em_reader, result.em.dtype)
        if result.fm is not None:
            assert result.fm.data is not None
            writer.add("fm", result.fm.data)
    io.write_json(json_path, result.metadata())


def run(folder: str | Path, section: str, channels: list[str], dyes: dict[str, dict],
        wavelength_tolerance_nm: float, em_stream: str | None,
        json_path: str | Path, npz_path: str | Path, role: str | None = None,
        name: str | None = None) -> IngestedSection:
    """Ingest one section and write its outputs (the rule's entry point).

    ``role`` predict reads the EM only; ``name`` is the section folder's name (display).
    """
    result = ingest_section(folder, section, dyes_from_config(channels, dyes),
                            wavelength_tolerance_nm, em_stream, read_fm=role != "predict")
    result.name, result.role = name, role
    for w in result.warnings:
        log.warning("%s: %s", section, w)
    write_outputs(result, json_path, npz_path)
    log.info("%s (%s): %s export (%s), FM %s, EM %s", section, role, result.variant,
             result.dialect, None if result.fm is None else result.fm.shape_cyx,
             result.em.shape_cyx)
    return result
