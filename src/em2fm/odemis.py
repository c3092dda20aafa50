"""Read and write OME-TIFF files the way the Odemis acquisition software does.

This module implements the format described in ``odemis-export.md`` (as written
by Odemis ``dataio/tiff.py``, v3.4–v3.8), independently of Odemis itself:

- the OME-XML sits in the ImageDescription of the first page only; tiles written
  by Odemis v3.4–3.5 prepend an ``ImageJ=…`` header that is skipped here;
- the XML namespace is read namespace-agnostically (``OME/2016-06``, ``2012-06``);
- pages are mapped to channels through ``TiffData@IFD`` (never by image name);
- the RGB "Composited image" thumbnail (reduced-image page) is skipped;
- FM is told from EM by the channels' excitation/emission wavelengths;
- pixel sizes are converted from ``PhysicalSizeX/YUnit`` (default µm), positions
  from ``PositionX/YUnit`` (bare numbers are metres, as old Odemis wrote them);
- rotation and shear come from the MapAnnotation of the same index as the image
  (``Annotation:n`` ↔ ``Image:n``) or from the legacy ``<Transform>`` element.

All values are returned in SI units (m, s, V, A) except wavelengths (nm).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from .geometry import ImageGeometry
from .io import atomic_path

log = logging.getLogger(__name__)

OME_NS = {
    "2016-06": "http://www.openmicroscopy.org/Schemas/OME/2016-06",
    "2012-06": "http://www.openmicroscopy.org/Schemas/OME/2012-06",
}

THUMBNAIL_PAGE_NAME = "Composited image"

_LENGTH_UNITS_M = {
    "m": 1.0,
    "cm": 1e-2,
    "mm": 1e-3,
    "µm": 1e-6,
    "μm": 1e-6,  # Greek mu, as some writers use
    "um": 1e-6,
    "nm": 1e-9,
    "pm": 1e-12,
    "Å": 1e-10,
}

_PIXEL_TYPES = {
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "float": np.float32,
    "double": np.float64,
}

# TIFF tag codes written per page by Odemis
TAG_PAGE_NAME = 285
TAG_X_POSITION = 286
TAG_Y_POSITION = 287


class ExportError(ValueError):
    """An export cannot be used: names the file, the problem and the fix."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}. Fix: {fix}")


@dataclass
class Channel:
    """One channel of an image; wavelengths in nm (None for EM detectors)."""

    name: str
    excitation_nm: float | None = None
    emission_nm: float | None = None

    @property
    def is_fluorescence(self) -> bool:
        """True for an FM channel (it has an excitation or emission wavelength)."""
        return self.excitation_nm is not None or self.emission_nm is not None


@dataclass
class OdemisImage:
    """One OME Image: pixel data (C, Y, X) and its placement on the stage.

    Attributes:
        name: the OME ``Image@Name`` (for merged FM images, the LAST channel's name).
        data: pixel array (C, Y, X), or None when read with ``load_pixels=False``.
        channels: one entry per C index.
        shape_cyx: (C, Y, X) in pixels, from the metadata.
        dtype: pixel type as numpy dtype string.
        pixel_size_m: (x, y) in metres, None when absent from the file.
        centre_m: stage position (x, y) in metres of the image centre, None when absent.
        rotation_rad: counter-clockwise rotation in radians, in [0, 2π).
        shear: vertical shear.
        acquisition_date: ISO 8601 string in UTC as written, or None.
        exposure_time_s: camera exposure or SEM dwell time in s, or None.
        voltage_v: SEM acceleration voltage in V, or None.
        current_a: SEM probe current in A, or None.
        significant_bits: bit depth of the detector, or None.
        extra_settings: the ``ExtraSettings`` JSON (all hardware settings).
        source: path of the file holding the pixels.
        ifds: page index per channel in ``source``.
    """

    name: str
    data: np.ndarray | None
    channels: list[Channel]
    shape_cyx: tuple[int, int, int]
    dtype: str
    pixel_size_m: tuple[float, float] | None = None
    centre_m: tuple[float, float] | None = None
    rotation_rad: float = 0.0
    shear: float = 0.0
    acquisition_date: str | None = None
    exposure_time_s: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    significant_bits: int | None = None
    extra_settings: dict = field(default_factory=dict)
    detector: str | None = None
    source: str = ""
    ifds: list[int] = field(default_factory=list)

    @property
    def is_fluorescence(self) -> bool:
        """True if any channel carries an excitation/emission wavelength (FM)."""
        return any(c.is_fluorescence for c in self.channels)

    @property
    def geometry(self) -> ImageGeometry:
        """Stage placement; raises ValueError if pixel size or position is missing."""
        if self.pixel_size_m is None or self.centre_m is None:
            raise ValueError(f"image {self.name!r} lacks pixel size or position")
        return ImageGeometry(
            shape_yx=(self.shape_cyx[1], self.shape_cyx[2]),
            pixel_size_m=self.pixel_size_m,
            centre_m=self.centre_m,
            rotation_rad=self.rotation_rad,
            shear=self.shear,
        )


@dataclass
class OdemisFile:
    """The content of one OME-TIFF file written by Odemis."""

    path: str
    dialect: str
    software: str | None
    images: list[OdemisImage]
    has_thumbnail: bool
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _strip_namespaces(root: ET.Element) -> str:
    """Remove namespaces in place; return the OME namespace URI of the root."""
    ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    for el in root.iter():
        el.tag = _local(el.tag)
        for key in list(el.attrib):
            if key.startswith("{"):
                el.attrib[_local(key)] = el.attrib.pop(key)
    return ns


def _dialect(ns: str) -> str:
    for name, uri in OME_NS.items():
        if ns == uri:
            return name
    m = re.search(r"OME/(\d{4}-\d{2})", ns)
    return m.group(1) if m else "unknown"


def extract_ome_xml(description: str) -> str | None:
    """Return the OME-XML part of an ImageDescription, or None if there is none.

    Odemis v3.4–v3.5 tiles prepend ``ImageJ=1.11a\\nimages=…`` before the XML.
    """
    start = description.find("<")
    if start < 0 or "OME" not in description[start:]:
        return None
    return description[start:]


def _length_m(value: str | None, unit: str | None, default_unit: str) -> float | None:
    if value is None:
        return None
    unit = unit or default_unit
    if unit not in _LENGTH_UNITS_M:
        raise ValueError(f"unsupported length unit {unit!r}")
    return float(value) * _LENGTH_UNITS_M[unit]


def _float_or_none(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _image_index(image_id: str | None, fallback: int) -> int:
    if image_id:
        m = re.search(r"(\d+)\s*$", image_id)
        if m:
            return int(m.group(1))
    return fallback


def _annotations(root: ET.Element) -> dict[int, dict[str, str]]:
    """MapAnnotation key/values by index: Annotation:n belongs to Image:n."""
    out: dict[int, dict[str, str]] = {}
    for mapa in root.iter("MapAnnotation"):
        idx = _image_index(mapa.get("ID"), -1)
        values = {m.get("K", ""): (m.text or "") for m in mapa.iter("M")}
        out[idx] = values
    return out


def _legacy_transform(image_el: ET.Element) -> tuple[float, float] | None:
    """(rotation, shear) from the Odemis ≤ v3.5 ``<Transform A00…A12>`` element."""
    tr = image_el.find("Transform")
    if tr is None:
        return None
    a00, a01 = float(tr.get("A00", 1)), float(tr.get("A01", 0))
    a10, a11 = float(tr.get("A10", 0)), float(tr.get("A11", 1))
    rot = math.atan2(a01, a11) % (2 * math.pi)
    scale_x = a00 * math.cos(rot) - a10 * math.sin(rot)
    shear = (a00 * math.sin(rot) + a10 * math.cos(rot)) / scale_x
    return rot, shear


def _plane_index_map(
    pixels: ThePixels, tiffdatas: list[ET.Element], filename: str
) -> tuple[dict[int, int], list[str]]:
    """Map channel index → IFD (first Z and T plane only).

    TiffData pointing (by ``UUID@FileName``) to another file of a serialized
    export are returned as ``foreign`` file names instead.
    """
    order = [d for d in pixels.dimension_order if d in "ZTC"]  # e.g. "ZTC" of "XYZTC"
    sizes = {"Z": pixels.size_z, "T": pixels.size_t, "C": pixels.size_c}
    channel_ifd: dict[int, int] = {}
    foreign: list[str] = []
    for td in tiffdatas:
        uuid = td.find("UUID")
        if uuid is not None and uuid.get("FileName") not in (None, "", filename):
            foreign.append(uuid.get("FileName", ""))
            continue
        ifd = int(td.get("IFD", 0))
        count = int(td.get("PlaneCount", 1 if "IFD" in td.attrib else 0)) or (
            sizes["Z"] * sizes["T"] * sizes["C"]
        )
        pos = {"Z": int(td.get("FirstZ", 0)), "T": int(td.get("FirstT", 0)),
               "C": int(td.get("FirstC", 0))}
        for k in range(count):
            if pos["Z"] == 0 and pos["T"] == 0:
                channel_ifd.setdefault(pos["C"], ifd + k)
            for dim in order:  # increment like an odometer, fastest first
                pos[dim] += 1
                if pos[dim] < sizes[dim]:
                    break
                pos[dim] = 0
    return channel_ifd, foreign


@dataclass
class ThePixels:
    """Parsed ``<Pixels>`` attributes."""

    size_x: int
    size_y: int
    size_c: int
    size_z: int
    size_t: int
    dimension_order: str
    dtype: str
    pixel_size_m: tuple[float, float] | None
    significant_bits: int | None


def _parse_pixels(px: ET.Element) -> ThePixels:
    psx = _length_m(px.get("PhysicalSizeX"), px.get("PhysicalSizeXUnit"), "µm")
    psy = _length_m(px.get("PhysicalSizeY"), px.get("PhysicalSizeYUnit"), "µm")
    if psx is not None and psy is None:
        psy = psx
    sig = px.get("SignificantBits")
    return ThePixels(
        size_x=int(px.get("SizeX", 0)),
        size_y=int(px.get("SizeY", 0)),
        size_c=int(px.get("SizeC", 1)),
        size_z=int(px.get("SizeZ", 1)),
        size_t=int(px.get("SizeT", 1)),
        dimension_order=px.get("DimensionOrder", "XYZCT"),
        dtype=px.get("Type", "uint16"),
        pixel_size_m=(psx, psy) if psx is not None and psy is not None else None,
        significant_bits=int(sig) if sig else None,
    )


def _parse_channel(ch: ET.Element, index: int) -> Channel:
    ex = _float_or_none(ch.get("ExcitationWavelength"))
    em = _float_or_none(ch.get("EmissionWavelength"))
    # OME allows other units; Odemis writes integer nm without a unit attribute
    for unit_key, value in (("ExcitationWavelengthUnit", ex), ("EmissionWavelengthUnit", em)):
        unit = ch.get(unit_key)
        if unit and unit != "nm" and value is not None:
            factor = _LENGTH_UNITS_M[unit] / 1e-9
            if unit_key.startswith("Ex"):
                ex = value * factor
            else:
                em = value * factor
    return Channel(name=ch.get("Name") or f"channel {index}", excitation_nm=ex, emission_nm=em)


def _parse_position(pixels_el: ET.Element) -> tuple[float, float] | None:
    for plane in pixels_el.iter("Plane"):
        if plane.get("PositionX") is None or plane.get("PositionY") is None:
            continue
        # bare numbers without a unit attribute are metres in Odemis files
        x = _length_m(plane.get("PositionX"), plane.get("PositionXUnit"), "m")
        y = _length_m(plane.get("PositionY"), plane.get("PositionYUnit"), "m")
        return (float(x), float(y))  # type: ignore[arg-type]
    return None


def _first_plane_float(pixels_el: ET.Element, attr: str) -> float | None:
    for plane in pixels_el.iter("Plane"):
        if plane.get(attr) is not None:
            return float(plane.get(attr))  # type: ignore[arg-type]
    return None


def _is_reduced(page: tifffile.TiffPage) -> bool:
    return bool(int(page.subfiletype) & 1)


def read_file(path: str | os.PathLike, load_pixels: bool = True) -> OdemisFile:
    """Read an Odemis OME-TIFF file.

    Args:
        path: the ``.ome.tiff`` file.
        load_pixels: read pixel data (False: metadata only, ``data`` is None).

    Raises:
        ExportError: the file is not a readable OME-TIFF.
    """
    path = Path(path)
    warnings: list[str] = []
    try:
        tif = tifffile.TiffFile(path)
    except (OSError, tifffile.TiffFileError, ValueError) as exc:
        raise ExportError(path, f"not a readable TIFF file ({exc})",
                          "re-export the acquisition from Odemis as OME-TIFF") from exc
    with tif:
        pages = tif.pages
        description = pages[0].description if len(pages) else ""
        xml = extract_ome_xml(description or "")
        if xml is None:
            raise ExportError(path, "no OME-XML metadata in the first page's ImageDescription",
                              "export as OME-TIFF from Odemis (File › Export › OME-TIFF), "
                              "not as plain TIFF or PNG")
        if not (description or "").lstrip().startswith("<"):
            warnings.append("ImageDescription has a header before the OME-XML (Odemis ≤ 3.5)")
        try:
            root = ET.fromstring(xml.encode("utf-8"))
        except ET.ParseError as exc:
            raise ExportError(path, f"OME-XML is malformed ({exc})",
                              "re-export the file from Odemis; it may be truncated") from exc
        ns = _strip_namespaces(root)
        dialect = _dialect(ns)
        annotations = _annotations(root)
        software = pages[0].software or None
        if len(pages) > 1 and not software:
            software = pages[1].software or None
        images: list[OdemisImage] = []
        has_thumbnail = False
        for n, image_el in enumerate(root.findall("Image")):
            pixels_el = image_el.find("Pixels")
            if pixels_el is None:
                continue
            pixels = _parse_pixels(pixels_el)
            channel_ifd, foreign = _plane_index_map(
                pixels, pixels_el.findall("TiffData"), path.name
            )
            if foreign and not channel_ifd:
                warnings.append(
                    f"image {image_el.get('Name')!r} has its pixels in other file(s) "
                    f"{sorted(set(foreign))}; read from there"
                )
                continue
            ifds = [channel_ifd.get(c, -1) for c in range(pixels.size_c)]
            first = ifds[0] if ifds and ifds[0] >= 0 else None
            page = pages[first] if first is not None and first < len(pages) else None
            is_thumb = page is not None and (
                _is_reduced(page) or _page_name(page) == THUMBNAIL_PAGE_NAME
            )
            if is_thumb:
                has_thumbnail = True
                continue
            if pixels.size_z > 1 or pixels.size_t > 1:
                warnings.append(
                    f"image {image_el.get('Name')!r} has Z={pixels.size_z}, T={pixels.size_t}; "
                    "only the first plane is used"
                )
            idx = _image_index(image_el.get("ID"), n)
            annot = annotations.get(idx, {})
            rotation, shear = 0.0, 0.0
            legacy = _legacy_transform(image_el)
            if legacy is not None:
                rotation, shear = legacy
            if "Rotation" in annot:
                rotation = float(annot["Rotation"])
            if "Shear" in annot:
                shear = float(annot["Shear"])
            extra: dict = {}
            extra_text = annot.get("ExtraSettings")
            if extra_text is None and image_el.find("ExtraSettings") is not None:
                extra_text = image_el.find("ExtraSettings").text  # type: ignore[union-attr]
            if extra_text:
                try:
                    extra = json.loads(extra_text)
                except json.JSONDecodeError:
                    warnings.append(f"image {image_el.get('Name')!r}: ExtraSettings is not JSON")
            channels = [_parse_channel(ch, c) for c, ch in enumerate(pixels_el.findall("Channel"))]
            while len(channels) < pixels.size_c:
                channels.append(Channel(name=f"channel {len(channels)}"))
            voltage = current = None
            for ch in pixels_el.findall("Channel"):
                ds = ch.find("DetectorSettings")
                if ds is not None and ds.get("Voltage"):
                    voltage = float(ds.get("Voltage"))  # type: ignore[arg-type]
                ls = ch.find("LightSourceSettings")
                if ls is not None and ls.get("Current"):
                    current = float(ls.get("Current"))  # type: ignore[arg-type]
            date_el = image_el.find("AcquisitionDate")
            data = None
            missing = [c for c, i in enumerate(ifds) if i < 0 or i >= len(pages)]
            if missing:
                raise ExportError(
                    path,
                    f"image {image_el.get('Name')!r}: no TIFF page for channel(s) {missing} "
                    "(TiffData@IFD missing or beyond the last page)",
                    "the file is incomplete; re-export it from Odemis",
                )
            if load_pixels:
                data = _read_planes(path, pages, ifds, pixels)
            detector = page.tags[271].value if page is not None and 271 in page.tags else None
            images.append(
                OdemisImage(
                    name=image_el.get("Name") or (channels[-1].name if channels else f"image {n}"),
                    data=data,
                    channels=channels,
                    shape_cyx=(pixels.size_c, pixels.size_y, pixels.size_x),
                    dtype=np.dtype(_PIXEL_TYPES.get(pixels.dtype, np.uint16)).name,
                    pixel_size_m=pixels.pixel_size_m,
                    centre_m=_parse_position(pixels_el),
                    rotation_rad=rotation % (2 * math.pi),
                    shear=shear,
                    acquisition_date=date_el.text if date_el is not None else None,
                    exposure_time_s=_first_plane_float(pixels_el, "ExposureTime"),
                    voltage_v=voltage,
                    current_a=current,
                    significant_bits=pixels.significant_bits,
                    extra_settings=extra,
                    detector=detector,
                    source=str(path),
                    ifds=ifds,
                )
            )
    return OdemisFile(
        path=str(path),
        dialect=dialect,
        software=software,
        images=images,
        has_thumbnail=has_thumbnail,
        warnings=warnings,
    )


def _page_name(page: tifffile.TiffPage) -> str | None:
    tag = page.tags.get(TAG_PAGE_NAME)
    return str(tag.value) if tag is not None else None


def _read_planes(
    path: Path, pages: tifffile.TiffPages, ifds: list[int], pixels: ThePixels
) -> np.ndarray:
    planes = []
    for c, ifd in enumerate(ifds):
        try:
            plane = pages[ifd].asarray()
        except ValueError as exc:  # e.g. LZW without imagecodecs
            raise ExportError(
                path, f"cannot decode page {ifd} (channel {c}): {exc}",
                "install the 'imagecodecs' package (needed for LZW-compressed pages)",
            ) from exc
        if plane.ndim != 2 or plane.shape != (pixels.size_y, pixels.size_x):
            raise ExportError(
                path,
                f"page {ifd} has shape {plane.shape}, but the OME-XML says "
                f"{(pixels.size_y, pixels.size_x)}",
                "the file was modified after acquisition; use the original export",
            )
        planes.append(plane)
    return np.stack(planes)


# --------------------------------------------------------------------------- writing

_NUMPY_TO_OME = {np.dtype(t).name: name for name, t in _PIXEL_TYPES.items()}


def _fmt(value: float) -> str:
    return f"{value:.15f}"


def build_ome_xml(
    images: list[OdemisImage],
    first_ifds: list[int],
    thumbnail_shape: tuple[int, int] | None,
    thumbnail_centre: tuple[float, float] | None,
    thumbnail_pixel_size: tuple[float, float] | None,
) -> str:
    """OME-XML (2016-06 dialect) describing ``images`` as Odemis v3.8 writes it."""
    ns = OME_NS["2016-06"]
    root = ET.Element("OME", {
        "xmlns": ns,
        "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
        "xsi:schemaLocation": f"{ns} {ns}/ome.xsd",
    })
    instrument = ET.SubElement(root, "Instrument", ID="Instrument:0")
    ET.SubElement(instrument, "Microscope", Manufacturer="Delmic", Model="SECOM")
    for k, img in enumerate(images):
        if img.detector:
            ET.SubElement(instrument, "Detector", ID=f"Detector:{k + 1}", Model=img.detector)
    sa = ET.Element("StructuredAnnotations")
    offset = 0
    if thumbnail_shape is not None:
        offset = 1
        im = ET.SubElement(root, "Image", ID="Image:0")
        px = ET.SubElement(im, "Pixels", {
            "ID": "Pixels:0", "DimensionOrder": "CXYZT", "Type": "uint8",
            "SizeX": str(thumbnail_shape[1]), "SizeY": str(thumbnail_shape[0]),
            "SizeZ": "1", "SizeT": "1", "SizeC": "3",
            **_physical_size_attrs(thumbnail_pixel_size),
        })
        ET.SubElement(px, "Channel", ID="Channel:0:0", SamplesPerPixel="1")
        ET.SubElement(px, "TiffData", IFD="0", FirstC="0", FirstT="0", FirstZ="0",
                      PlaneCount="1")
        if thumbnail_centre is not None:
            ET.SubElement(px, "Plane", _plane_attrs(0, thumbnail_centre, None))
    for k, img in enumerate(images):
        idx = k + offset
        im = ET.SubElement(root, "Image", ID=f"Image:{idx}", Name=img.name)
        if img.acquisition_date:
            ET.SubElement(im, "AcquisitionDate").text = img.acquisition_date
        c, sy, sx = img.shape_cyx
        attrs = {
            "ID": f"Pixels:{idx}", "DimensionOrder": "XYZTC",
            "Type": _NUMPY_TO_OME[np.dtype(img.dtype).name],
            "SizeX": str(sx), "SizeY": str(sy), "SizeZ": "1", "SizeT": "1", "SizeC": str(c),
            **_physical_size_attrs(img.pixel_size_m),
        }
        if img.significant_bits:
            attrs["SignificantBits"] = str(img.significant_bits)
        px = ET.SubElement(im, "Pixels", attrs)
        for ci, ch in enumerate(img.channels):
            cattrs = {"ID": f"Channel:{idx}:{ci}", "Name": ch.name}
            if ch.excitation_nm is not None:
                cattrs["ExcitationWavelength"] = str(round(ch.excitation_nm))
            if ch.emission_nm is not None:
                cattrs["EmissionWavelength"] = str(round(ch.emission_nm))
            if ch.is_fluorescence:
                cattrs.update(IlluminationType="Epifluorescence", AcquisitionMode="WideField",
                              ContrastMethod="Fluorescence")
            che = ET.SubElement(px, "Channel", cattrs)
            if img.current_a is not None:
                ET.SubElement(che, "LightSourceSettings", ID=f"LightSource:{idx}",
                              Current=_fmt(img.current_a))
            if img.voltage_v is not None:
                ET.SubElement(che, "DetectorSettings", ID=f"Detector:{k + 1}",
                              Voltage=_fmt(img.voltage_v))
        for ci in range(c):
            ET.SubElement(px, "TiffData", IFD=str(first_ifds[k] + ci), FirstC=str(ci),
                          FirstT="0", FirstZ="0", PlaneCount="1")
        for ci in range(c):
            ET.SubElement(px, "Plane", _plane_attrs(ci, img.centre_m, img.exposure_time_s))
        mapa = ET.SubElement(sa, "MapAnnotation", ID=f"Annotation:{idx}")
        val = ET.SubElement(mapa, "Value")
        ET.SubElement(val, "M", K="ExtraSettings").text = json.dumps(img.extra_settings)
        if img.rotation_rad:
            ET.SubElement(val, "M", K="Rotation").text = _fmt(img.rotation_rad % (2 * math.pi))
        if img.shear:
            ET.SubElement(val, "M", K="Shear").text = _fmt(img.shear)
    root.append(sa)
    ET.indent(root, space="    ")
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>' + body


def _physical_size_attrs(pixel_size_m: tuple[float, float] | None) -> dict[str, str]:
    if pixel_size_m is None:
        return {}
    return {
        "PhysicalSizeX": _fmt(pixel_size_m[0] * 1e6),
        "PhysicalSizeY": _fmt(pixel_size_m[1] * 1e6),
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeYUnit": "µm",
    }


def _plane_attrs(
    c: int, centre_m: tuple[float, float] | None, exposure_s: float | None
) -> dict[str, str]:
    attrs = {"TheC": str(c), "TheT": "0", "TheZ": "0"}
    if exposure_s is not None:
        attrs.update(ExposureTime=_fmt(exposure_s), ExposureTimeUnit="s")
    if centre_m is not None:
        attrs.update(PositionX=_fmt(centre_m[0]), PositionY=_fmt(centre_m[1]),
                     PositionXUnit="m", PositionYUnit="m")
    return attrs


def make_thumbnail(images: list[OdemisImage], size: int = 256) -> np.ndarray:
    """RGB uint8 composite of the first image, as Odemis stores for previews."""
    img = images[0]
    assert img.data is not None
    data = img.data.astype(np.float32)
    step = max(1, math.ceil(max(data.shape[1:]) / size))
    small = data[:, ::step, ::step]
    rgb = np.zeros((*small.shape[1:], 3), dtype=np.uint8)
    for c in range(min(3, small.shape[0])):
        lo, hi = np.percentile(small[c], [1, 99.5])
        scaled = np.clip((small[c] - lo) / max(hi - lo, 1e-9), 0, 1)
        rgb[..., (c + 1) % 3 if small.shape[0] > 1 else c] = (scaled * 255).astype(np.uint8)
    if small.shape[0] == 1:
        rgb[..., 1] = rgb[..., 2] = rgb[..., 0]
    return rgb


def write_file(
    path: str | os.PathLike,
    images: list[OdemisImage],
    thumbnail: bool = True,
    software: str = "Odemis 3.8.0",
    compress: bool = True,
) -> None:
    """Write ``images`` as one Odemis-style OME-TIFF file (a "GUI acquisition").

    One 2-D LZW page per channel, the OME-XML in the first page only, Odemis's
    per-page tags (PageName, XResolution in px/cm, X/YPosition in cm + 100 cm),
    and optionally the RGB "Composited image" thumbnail as the first page.
    The file is written to a temporary name and renamed, so it appears whole
    or not at all.

    Args:
        path: output ``.ome.tiff`` path.
        images: images with ``data`` (C, Y, X), channels and placement.
        thumbnail: prepend the RGB thumbnail (reduced-image page).
        software: the TIFF Software tag.
        compress: LZW + predictor (Odemis default); False writes uncompressed.
    """
    path = Path(path)
    thumb = make_thumbnail(images) if thumbnail else None
    first_ifds = []
    ifd = 1 if thumb is not None else 0
    for img in images:
        first_ifds.append(ifd)
        ifd += img.shape_cyx[0]
    thumb_pxs = None
    if thumb is not None and images[0].pixel_size_m is not None:
        ratio = images[0].shape_cyx[2] / thumb.shape[1]
        thumb_pxs = (images[0].pixel_size_m[0] * ratio, images[0].pixel_size_m[1] * ratio)
    xml = build_ome_xml(
        images, first_ifds, thumb.shape[:2] if thumb is not None else None,
        images[0].centre_m if thumb is not None else None, thumb_pxs,
    )
    xml_bytes = xml.encode("utf-8")  # "µm" is not ASCII; Odemis writes UTF-8 too
    compression = "lzw" if compress else None
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tw:
        described = False
        if thumb is not None:
            tw.write(thumb, photometric="rgb", subfiletype=1, description=xml_bytes,
                     metadata=None, compression=compression, software=False,
                     predictor=compress or None,
                     extratags=[(TAG_PAGE_NAME, "s", 0, THUMBNAIL_PAGE_NAME, True)])
            described = True
        for img in images:
            assert img.data is not None, f"image {img.name} has no pixel data"
            data = np.asarray(img.data, dtype=img.dtype)
            for ci, ch in enumerate(img.channels):
                tw.write(
                    data[ci],
                    photometric="minisblack",
                    description=None if described else xml_bytes,
                    metadata=None,
                    compression=compression,
                    predictor=compress or None,
                    software=software,
                    datetime=_tiff_datetime(img.acquisition_date),
                    resolution=_resolution_px_per_cm(img.pixel_size_m),
                    resolutionunit="CENTIMETER" if img.pixel_size_m else None,
                    extratags=_page_tags(img, ch),
                )
                described = True


def _tiff_datetime(iso: str | None) -> str | None:
    if not iso:
        return None
    return _dt.datetime.fromisoformat(iso).strftime("%Y:%m:%d %H:%M:%S")


def _resolution_px_per_cm(pixel_size_m: tuple[float, float] | None):
    if pixel_size_m is None:
        return None
    return (0.01 / pixel_size_m[0], 0.01 / pixel_size_m[1])


def _page_tags(img: OdemisImage, ch: Channel) -> list[tuple]:
    tags: list[tuple] = [(TAG_PAGE_NAME, "s", 0, ch.name, True)]
    if img.centre_m is not None:
        # TIFF positions cannot be negative: Odemis writes cm shifted by +100 cm
        tags.append((TAG_X_POSITION, "2I", 1, _rational(100 + img.centre_m[0] * 100), True))
        tags.append((TAG_Y_POSITION, "2I", 1, _rational(100 + img.centre_m[1] * 100), True))
    if img.detector:
        tags.append((271, "s", 0, img.detector, True))
    return tags


def _rational(value: float, denominator: int = 65536) -> tuple[int, int]:
    return (round(value * denominator), denominator)


def write_per_stream(
    folder: str | os.PathLike,
    basename: str,
    images: list[OdemisImage],
    software: str = "Odemis 3.8.0",
) -> list[Path]:
    """Write one file per stream (``basename_<stream>.ome.tiff``), as scripted exports do.

    Each FM channel becomes its own single-channel image (one stream each);
    returns the written paths.
    """
    folder = Path(folder)
    written: list[Path] = []
    for img in images:
        for ci, ch in enumerate(img.channels):
            single = OdemisImage(
                **{**img.__dict__, "name": ch.name, "channels": [ch],
                   "data": None if img.data is None else img.data[ci:ci + 1],
                   "shape_cyx": (1, img.shape_cyx[1], img.shape_cyx[2]), "ifds": []}
            )
            safe = re.sub(r"[^A-Za-z0-9._-]+", "-", ch.name).strip("-")
            out = folder / f"{basename}_{safe}.ome.tiff"
            write_file(out, [single], thumbnail=False, software=software)
            written.append(out)
    return written
