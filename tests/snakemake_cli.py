"""Run the workflow through the ``snakemake`` CLI on tiny data (shared by the slow tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, check: bool = True,
              timeout_s: int = 1200) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` in ``workdir`` with the repository's workflow, config.yaml and the
    tiny config (2 cores); on failure (``check``) an AssertionError with the output's end."""
    cmd = [sys.executable, "-m", "snakemake", *args, "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--cores", "2",
           "--configfile", str(ROOT / "config.yaml"), str(TINY)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if check and r.returncode:
        raise AssertionError(f"snakemake failed ({r.returncode}):\n{r.stdout[-4000:]}\n"
                             f"{r.stderr[-6000:]}")
    return r
