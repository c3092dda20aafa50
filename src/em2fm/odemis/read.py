"""Reading Odemis OME-TIFF files: OME-XML parsing and :func:`read_file`."""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import tifffile

from .model import (
    _LENGTH_UNITS_M,
    _PIXEL_TYPES,
    OME_NS,
    TAG_PAGE_NAME,
    THUMBNAIL_PAGE_NAME,
    Channel,
    ExportError,
    OdemisFile,
    OdemisImage,
    ThePixels,
)


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
