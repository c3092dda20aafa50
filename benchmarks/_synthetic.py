"""Synthetic data and measurements shared by the benchmarks (numpy/scipy only: no torch,
so that a benchmark's child process measures the stage's memory, not an import's).

- :func:`texture`: EM-like texture (noise smoothed at several scales);
- :func:`peak_rss_mib`: this process's peak resident memory (VmHWM);
- :func:`write_odemis_section`: an Odemis-like per-stream export of one section, an SEM
  OME-TIFF of n² px written tile by tile (tiled, LZW, as Odemis's pyramidal exports) and
  a small FM OME-TIFF of the same content at 100 nm px, offset by a stage error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def texture(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """EM-like z-scored texture: noise smoothed at several scales (px)."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    for sigma, amp in [(1, 0.5), (4, 1.0), (16, 1.5), (48, 1.0)]:
        img += amp * ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
    img -= img.mean()
    return img / img.std()


def peak_rss_mib() -> float:
    """Peak resident memory of this process since it started (VmHWM; MiB).

    Not ``getrusage().ru_maxrss``: that survives ``execve``, so a child would report the
    high-water mark of the process it was forked from.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


EM_PX_M = 5e-9  # SEM pixel
FM_PX_M = 100e-9  # FM pixel: 20 SEM px
FM_PER_EM = 20
TILE = 256  # SEM TIFF tile edge (px)
STAGE_CENTRE_M = (1.2e-3, -0.8e-3)  # SEM image centre on the stage
STAGE_ERROR_M = (3e-7, -2e-7)  # FM position error of the metadata (within the capture range)


def write_odemis_section(folder: Path, n: int, seed: int = 0) -> dict:
    """An n² px SEM (5 nm px) and a 2-channel FM (100 nm px) of one section, Odemis-style.

    The SEM is texture plus a coarse pattern ``G`` (one value per FM pixel, ~µm blobs);
    the FM shows ``G`` (blurred, with noise) and is placed by stage metadata with a
    :data:`STAGE_ERROR_M` error that registration must find. The SEM is generated and
    written tile by tile: never whole in memory. Returns sizes (bytes) and shapes.
    """
    import tifffile

    from em2fm.odemis import (
        Channel,
        OdemisImage,
        _page_tags,
        _resolution_px_per_cm,
        build_ome_xml,
        write_file,
    )

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    m = n // FM_PER_EM
    coarse = ndimage.gaussian_filter(rng.normal(size=(m + 1, m + 1)).astype(np.float32), 6)
    coarse = (coarse - coarse.mean()) / coarse.std()  # one value per FM px (top-left aligned)
    patch = np.clip(texture((2048, 2048), seed) * 2500 + 20000, 0, 65535).astype(np.float32)

    def tiles():
        for r0 in range(0, n, TILE):
            rows = np.arange(r0, r0 + TILE) // FM_PER_EM
            for c0 in range(0, n, TILE):
                cols = np.arange(c0, c0 + TILE) // FM_PER_EM
                pr, pc = (r0 * 7 + c0 * 3) % (2048 - TILE), (c0 * 5 + r0) % (2048 - TILE)
                t = patch[pr:pr + TILE, pc:pc + TILE] + 6000 * coarse[rows][:, cols]
                yield np.clip(t, 0, 65535).astype(np.uint16)

    sem = OdemisImage(name="Secondary electrons", data=None,
                      channels=[Channel("Secondary electrons")], shape_cyx=(1, n, n),
                      dtype="uint16", pixel_size_m=(EM_PX_M, EM_PX_M),
                      centre_m=STAGE_CENTRE_M, exposure_time_s=2e-6, voltage_v=5000.0,
                      detector="se-detector", acquisition_date="2026-01-01T12:00:00")
    xml = build_ome_xml([sem], [0], None, None, None).encode("utf-8")
    sem_path = folder / "section_Secondary-electrons.ome.tiff"
    with tifffile.TiffWriter(sem_path, bigtiff=n >= 32768) as tw:
        tw.write(tiles(), shape=(n, n), dtype=np.uint16, tile=(TILE, TILE),
                 compression="lzw", predictor=True, photometric="minisblack",
                 description=xml, metadata=None, software="Odemis 3.8.0",
                 resolution=_resolution_px_per_cm(sem.pixel_size_m),
                 resolutionunit="CENTIMETER", extratags=_page_tags(sem, sem.channels[0]))
    fm_data = np.stack([
        200 + 800 * (ndimage.gaussian_filter(coarse[:m, :m], 1.0) + 3).clip(0)
        + rng.normal(0, 20, (m, m)),
        300 + 400 * (3 - coarse[:m, :m]).clip(0) + rng.normal(0, 20, (m, m)),
    ]).clip(0, 65535).astype(np.uint16)
    # FM px (i, j) covers SEM px [20i, 20i + 20): its centre lies at SEM px 20i + 9.5
    off = FM_PER_EM * (m - 1) / 2 + (FM_PER_EM - 1) / 2 - (n - 1) / 2  # SEM px, x and y
    true_centre = (STAGE_CENTRE_M[0] + off * EM_PX_M, STAGE_CENTRE_M[1] - off * EM_PX_M)
    fm = OdemisImage(name="Filtered colour", data=fm_data,
                     channels=[Channel("Filtered colour 1", 405.0, 450.0),
                               Channel("Filtered colour 2", 590.0, 617.0)],
                     shape_cyx=fm_data.shape, dtype="uint16",
                     pixel_size_m=(FM_PX_M, FM_PX_M),
                     centre_m=(true_centre[0] + STAGE_ERROR_M[0],
                               true_centre[1] + STAGE_ERROR_M[1]),
                     exposure_time_s=0.5, acquisition_date="2026-01-01T11:50:00")
    fm_path = folder / "section_FM.ome.tiff"
    write_file(fm_path, [fm], thumbnail=False)
    return {"sem_bytes": sem_path.stat().st_size, "fm_bytes": fm_path.stat().st_size,
            "em_shape": [n, n], "fm_shape": [m, m]}
