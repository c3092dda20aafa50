"""Writing Odemis-style OME-TIFF files: :func:`build_ome_xml`, :func:`write_file`,
:func:`write_per_stream` and :func:`make_thumbnail`."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import tifffile

from ..io import atomic_path
from .model import (
    _PIXEL_TYPES,
    OME_NS,
    TAG_PAGE_NAME,
    TAG_X_POSITION,
    TAG_Y_POSITION,
    THUMBNAIL_PAGE_NAME,
    Channel,
    OdemisImage,
)

_NUMPY_TO_OME = {np.dtype(t).name: name for name, t in _PIXEL_TYPES.items()}


def _fmt(value: float) -> str:
    return f"{value:.15f}"


def tiff_compression(dtype: np.dtype | str, compress: bool = True) -> dict:
    """tifffile ``compression``/``predictor`` keywords for planes of ``dtype``.

    Integers: LZW with horizontal differencing (Odemis's default). Floats: deflate without
    predictor, because Bio-Formats 7 (the reader of Fiji) cannot decode TIFF's
    floating-point predictor (3) that tifffile would choose ("Unknown Predictor (3)"), and
    deflate alone is as small (a float32 prediction: 368 kB, against 381 kB with LZW and
    predictor 3). ``compress=False``: uncompressed.
    """
    if not compress:
        return {"compression": None, "predictor": None}
    if np.dtype(dtype).kind == "f":
        return {"compression": "zlib", "predictor": None}
    return {"compression": "lzw", "predictor": True}


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
            cattrs = {"ID": f"Channel:{idx}:{ci}", "Name": ch.name, "SamplesPerPixel": "1"}
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
        compress: compressed as :func:`tiff_compression` says (integers: LZW + predictor,
            Odemis's default); False writes uncompressed.
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
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tw:
        described = False
        if thumb is not None:
            tw.write(thumb, photometric="rgb", subfiletype=1, description=xml_bytes,
                     metadata=None, software=False, **tiff_compression(thumb.dtype, compress),
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
                    **tiff_compression(img.dtype, compress),
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
