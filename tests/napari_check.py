"""Open OME-TIFFs in napari's GUI through the em2fm plugin, as a user would.

Two halves:

- run as a script by napari's own Python (``.tmp/napari/bin/python``, where napari, PyQt5
  and em2fm are installed; napari is not a workflow dependency): opens every file with
  ``viewer.open(path, plugin="em2fm")`` (so napari finds the plugin through its installed
  manifest), writes each layer's world extent (µm) and a screenshot of the canvas;
- :func:`open_in_napari`, called by the tests: runs that script under Xvfb and returns
  what it wrote.

``.ci/run`` installs Xvfb and Qt's X libraries (Debian), creates ``.tmp/napari`` and sets
``EM2FM_TEST_NAPARI=1`` so that the test fails instead of skipping when napari is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".tmp" / "napari" / "bin" / "python"


def open_in_napari(files: list[Path], folder: Path) -> tuple[list[dict], Path]:
    """Layers napari showed for ``files`` (name, kind, world extent, multiscale) and a
    screenshot; skips without napari, fails when asked for (EM2FM_TEST_NAPARI=1)."""
    from conftest import missing_tool

    python = Path(os.environ.get("EM2FM_NAPARI_PYTHON", PYTHON))
    xvfb = shutil.which("xvfb-run")
    if not python.is_file() or xvfb is None:
        why = f"napari's Python at {python}: {python.is_file()}; xvfb-run: {xvfb is not None}"
        missing_tool("EM2FM_TEST_NAPARI", why, ".ci/run installs both")
    home = folder / "home"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)  # also XDG_RUNTIME_DIR
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_RUNTIME_DIR": str(home),
           "QT_QPA_PLATFORM": "xcb"}
    report, shot = folder / "layers.json", folder / "napari.png"
    r = subprocess.run([xvfb, "-a", "-s", "-screen 0 1280x1024x24", str(python), __file__,
                        str(report), str(shot), *map(str, files)],
                       capture_output=True, text=True, timeout=300, env=env)
    if r.returncode or not report.is_file():
        raise AssertionError(f"napari failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return json.loads(report.read_text()), shot


def _main(report: str, shot: str, files: list[str]) -> None:
    import napari

    viewer = napari.Viewer(show=True)
    for path in files:
        viewer.open(path, plugin="em2fm")
    layers = []
    for layer in viewer.layers:
        lo, hi = layer.extent.world
        layers.append({"name": layer.name, "kind": type(layer).__name__,
                       "multiscale": bool(getattr(layer, "multiscale", False)),
                       "world_min_um": [float(v) for v in lo],
                       "world_max_um": [float(v) for v in hi]})
    viewer.reset_view()
    viewer.screenshot(shot, canvas_only=True, size=(600, 600))
    viewer.close()
    Path(report).write_text(json.dumps(layers))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2], sys.argv[3:])
