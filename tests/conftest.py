"""Shared fixtures. Caches and temporary files stay inside the work tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ODEMIS_SAMPLE = SHARED / "odemis-samples" / "secom_acq.ome.tiff"

sys.path.insert(0, str(ROOT / "src"))

(ROOT / ".tmp" / "tmp").mkdir(parents=True, exist_ok=True)  # --basetemp lives in .tmp/
os.environ["TMPDIR"] = str(ROOT / ".tmp" / "tmp")
_CACHE = ROOT / ".cache"
for var, sub in (("XDG_CACHE_HOME", "xdg"), ("MPLCONFIGDIR", "matplotlib"),
                 ("TORCH_HOME", "torch")):
    os.environ[var] = str(_CACHE / sub)
    (_CACHE / sub).mkdir(parents=True, exist_ok=True)


def missing_tool(env: str, why: str, fix: str) -> NoReturn:
    """An external tool a test needs is absent: fail when it was asked for (``env`` set to 1,
    as ``.ci/run`` does), skip otherwise; ``why`` says what is missing, ``fix`` how to get it."""
    if os.environ.get(env) == "1":
        pytest.fail(f"{env}=1 but {why} ({fix})")
    pytest.skip(f"{why} ({fix} and sets {env}=1)")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def odemis_sample() -> Path:
    if not ODEMIS_SAMPLE.exists():
        pytest.fail(f"the Odemis sample is missing: {ODEMIS_SAMPLE} (../shared beside the repo)")
    return ODEMIS_SAMPLE


# --------------------------------------------------------------------------- a tiny pipeline
# Three small sections of Gaussian "nuclei" visible in both EM and FM (stage metadata off
# by a few hundred nm), run through ingest → register → tiles → train → predict → evaluate
# without Snakemake, shared by the tests of the later stages.


def _render(geom, blobs: np.ndarray, sigma_m: float) -> np.ndarray:
    from em2fm.geometry import apply_affine, grid_points

    pts = apply_affine(geom.pixel_to_stage(), grid_points(geom.shape_yx))
    d2 = ((pts[:, None, :] - blobs[None, :, :2]) ** 2).sum(-1)
    return (np.exp(-d2 / (2 * sigma_m**2)) * blobs[None, :, 2]).sum(1).reshape(geom.shape_yx)


def make_section(folder: Path, index: int, fm_pixel_m: float = 100e-9, with_fm: bool = True,
                 name: str | None = None, insulin: bool = False) -> dict:
    """Write one tiny Odemis export; return its true FM→EM transform and clean FM.

    ``fm_pixel_m``: FM pixel size (m); ``with_fm`` False writes the SEM image only (an
    EM-only section); ``name``: the file's stem (default ``S{index}``); ``insulin`` adds a
    second FM channel (ex 590 / em 617 nm, the default config's Insulin) to the export.
    """
    import math

    from em2fm.geometry import ImageGeometry, moving_to_fixed_px
    from em2fm.odemis import Channel, OdemisImage, write_file

    rng = np.random.default_rng(100 + index)
    centre = np.array([1e-3 + index * 1e-4, 2e-3])
    n = 40
    blobs = np.column_stack([centre[0] + rng.uniform(-6e-6, 6e-6, n),
                             centre[1] + rng.uniform(-6e-6, 6e-6, n), rng.uniform(0.4, 1, n)])
    em_geom = ImageGeometry((320, 320), (25e-9, 25e-9), tuple(centre))
    fm_true = ImageGeometry((120, 120), (fm_pixel_m, fm_pixel_m), (centre[0] + 3e-7, centre[1]),
                            rotation_rad=math.radians(3))
    fm_meta = ImageGeometry(fm_true.shape_yx, fm_true.pixel_size_m,
                            (fm_true.centre_m[0] + 2e-7, fm_true.centre_m[1] - 2e-7),
                            rotation_rad=fm_true.rotation_rad)
    em = 2000 + 20000 * _render(em_geom, blobs, 250e-9) + rng.normal(0, 800, em_geom.shape_yx)
    clean = 100 + 1000 * _render(fm_true, blobs, 300e-9)
    fm = rng.poisson(clean)
    folder.mkdir(parents=True)
    planes, channels = [fm], [Channel("Hoechst", 405, 450)]
    if insulin:
        planes.append(rng.poisson(100 + 500 * _render(fm_true, blobs[::2], 300e-9)))
        channels.append(Channel("Insulin", 590, 617))
    data = np.stack(planes).astype(np.uint16)
    fm_image = OdemisImage("FM", data, channels, data.shape, "uint16", fm_meta.pixel_size_m,
                           fm_meta.centre_m, rotation_rad=fm_meta.rotation_rad)
    write_file(folder / f"{name or f'S{index}'}.ome.tiff", [*([fm_image] if with_fm else []),
        OdemisImage("BSE", np.clip(em, 0, 65535)[None].astype(np.uint16), [Channel("BSE")],
                    (1, 320, 320), "uint16", em_geom.pixel_size_m, em_geom.centre_m),
    ])
    return {"fm_to_em_px": moving_to_fixed_px(fm_true, em_geom), "fm_clean": clean[None],
            "fm_specific": (clean - 100)[None], "channels": [
                {"name": "Hoechst", "excitation_nm": 405, "emission_nm": 450}]}


@pytest.fixture(scope="session")
def mini_run(tmp_path_factory) -> dict:
    """Run the package stages on three tiny sections; return the output paths."""
    from em2fm import evaluate, ingest, io, predict, register, tiles, train

    root = tmp_path_factory.mktemp("mini")
    sections = ["S1", "S2", "S3"]
    split = {"S1": "train", "S2": "val", "S3": "test"}
    dyes = {"Hoechst": {"excitation_nm": 405, "emission_nm": 450}}
    out = {"root": root, "sections": sections}
    for k, s in enumerate(sections, 1):
        truth = make_section(root / "raw" / s, k)
        io.write_json(root / "truth" / f"{s}.json", {"section": s, **{
            key: truth[key] for key in ("fm_to_em_px", "channels")}})
        io.save_npz(root / "truth" / f"{s}.npz", fm_clean=truth["fm_clean"],
                    fm_specific=truth["fm_specific"])
        ingest.run(root / "raw" / s, s, ["Hoechst"], dyes, 20, None,
                   root / "ingest" / f"{s}.json", root / "ingest" / f"{s}.npz")
        register.run_multimodal(root / "ingest" / f"{s}.json", root / "ingest" / f"{s}.npz",
                                None, {"max_shift_um": 1.0}, 0,
                                root / "registration" / "round0" / f"{s}.json")
        register.run_final(root / "ingest" / f"{s}.json", root / "ingest" / f"{s}.npz",
                           root / "registration" / "round0" / f"{s}.json",
                           root / "registration" / f"{s}.json", root / "registration" / f"{s}.png")
        tiles.run(root / "ingest" / f"{s}.json", root / "ingest" / f"{s}.npz",
                  root / "registration" / f"{s}.json", {"em_scale": 4, "tile_size": 16,
                                                         "margin": None},
                  split[s], root / "tiles" / f"{s}.npz", root / "tiles" / f"{s}.json")
    model = root / "model"
    out["best"] = train.run(
        [str(root / "tiles" / f"{s}.npz") for s in ("S1", "S2")],
        str(root / "ingest" / "S1.json"), {"base_channels": 4, "max_channels": 16, "depth": 3},
        {"steps": 60, "batch_size": 4, "learning_rate": 0.01, "val_every": 20}, {
            "tile_size": 16, "em_scale": 4, "margin": None}, 0, 2, str(model / "model.pt"),
        str(model / "last.pt"), str(model / "training.tsv"))
    for s in sections:
        predict.run(root / "ingest" / f"{s}.json", root / "ingest" / f"{s}.npz",
                    model / "model.pt", None, {"window": 24, "test_time_augmentation": True},
                    "cpu", 2, root / "predictions" / f"{s}.ome.tif",
                    root / "predictions" / f"{s}.uncertainty.ome.tif")
    evaluate.run(sections, [str(root / "tiles" / f"{s}.npz") for s in sections],
                 [str(root / "predictions" / f"{s}.ome.tif") for s in sections],
                 [str(root / "ingest" / f"{s}.json") for s in sections],
                 [str(root / "registration" / f"{s}.json") for s in sections],
                 str(model / "model.pt"), str(root / "truth"), str(root / "metrics.tsv"),
                 str(root / "registration_rounds.tsv"))
    return out
