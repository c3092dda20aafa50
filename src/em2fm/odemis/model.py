"""The data model of an Odemis OME-TIFF file: constants, :class:`ExportError`, channels, images.

Shared by :mod:`.read` and :mod:`.write`; values in SI units except wavelengths (nm).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..geometry import ImageGeometry

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
