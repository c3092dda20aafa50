"""Read and write OME-TIFF files the way the Odemis acquisition software does.

This package implements the format described in ``odemis-export.md`` (as written
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

Modules: :mod:`.model` (constants, :class:`ExportError`, :class:`Channel`,
:class:`OdemisImage`, :class:`OdemisFile`, :class:`ThePixels`), :mod:`.read` (OME-XML
parsing, :func:`read_file`) and :mod:`.write` (:func:`build_ome_xml`, :func:`write_file`,
:func:`write_per_stream`, :func:`make_thumbnail`).
"""

from __future__ import annotations

import logging

from .model import (
    OME_NS,
    TAG_PAGE_NAME,
    TAG_X_POSITION,
    TAG_Y_POSITION,
    THUMBNAIL_PAGE_NAME,
    Channel,
    ExportError,
    OdemisFile,
    OdemisImage,
    ThePixels,
)
from .read import extract_ome_xml, read_file
from .write import (
    _page_tags,
    _resolution_px_per_cm,
    build_ome_xml,
    make_thumbnail,
    tiff_compression,
    write_file,
    write_per_stream,
)

log = logging.getLogger(__name__)

# _page_tags and _resolution_px_per_cm are private helpers of .write that
# em2fm.pyramid and benchmarks/_synthetic.py import from here
__all__ = [
    "OME_NS",
    "TAG_PAGE_NAME",
    "TAG_X_POSITION",
    "TAG_Y_POSITION",
    "THUMBNAIL_PAGE_NAME",
    "Channel",
    "ExportError",
    "OdemisFile",
    "OdemisImage",
    "ThePixels",
    "_page_tags",
    "_resolution_px_per_cm",
    "build_ome_xml",
    "extract_ome_xml",
    "make_thumbnail",
    "read_file",
    "tiff_compression",
    "write_file",
    "write_per_stream",
]
