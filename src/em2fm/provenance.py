"""Provenance shared by the report and the share bundle: code version, software, input
checksums, wall time and peak memory per rule."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import platform
import subprocess
from pathlib import Path

from . import __version__

PACKAGES = ("snakemake", "torch", "numpy", "scipy", "SimpleITK", "tifffile", "imagecodecs",
            "matplotlib", "PyYAML")


def git_state(repo: str | Path | None = None) -> dict[str, str]:
    """Commit of the workflow's checkout and whether it had uncommitted changes.

    ``repo`` defaults to the checkout holding this file. A tarball without ``.git`` says so.
    """
    repo = Path(repo) if repo else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=repo, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = [ln for ln in git("status", "--porcelain", "--untracked-files=no")
                   .splitlines() if ln.strip()]
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return {"git commit": "unknown (not a git checkout)", "git dirty": "unknown"}
    dirty = f"yes ({len(changed)} tracked files changed)" if changed else "no"
    return {"git commit": commit, "git dirty": dirty}


def versions() -> dict[str, str]:
    """Versions of the software that produced the report."""
    out = {"em2fm": __version__, "python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def sha256(path: str | Path) -> str:
    """SHA-256 of a file (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_files(ingests: list[dict]) -> list[dict]:
    """Every input export of every section, with its size and SHA-256."""
    out = []
    for ing in ingests:
        for f in ing["files"]:
            p = Path(f)
            ok = p.is_file()
            out.append({"section": ing["section"], "file": str(p),
                        "bytes": p.stat().st_size if ok else "missing",
                        "sha256": sha256(p) if ok else "", "variant": ing.get("variant", ""),
                        "dialect": ing.get("dialect", "")})
    return out


def read_benchmark(path: str | Path) -> dict[str, float]:
    """One Snakemake ``benchmark:`` TSV: wall time (s) and peak memory (max_rss, MB)."""
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: benchmark file without a data row")
    header = lines[0].split("\t")
    rows = [dict(zip(header, ln.split("\t"), strict=True)) for ln in lines[1:] if ln.strip()]

    def num(v: str) -> float:
        try:
            return float(v)
        except ValueError:
            return float("nan")

    return {"s": sum(num(r["s"]) for r in rows),
            "max_rss_mb": max(num(r.get("max_rss", "NA")) for r in rows),
            "cpu_s": sum(num(r.get("cpu_time", "NA")) for r in rows)}


def benchmark_rows(paths: list[str | Path], root: str | Path = "results/benchmarks",
                   sections: list[str] | None = None) -> list[dict]:
    """Wall time and peak memory per step, from the jobs' benchmark files.

    A file ``<root>/<step>/<section>.tsv`` counts for ``<step>`` (e.g. ``register/round0``);
    any other file ``<root>/<name>.tsv`` is a step of its own (``train``, ``train/round0``).
    Without ``sections``, every file in a sub-folder counts for its folder.
    """
    names = set(sections) if sections is not None else None
    groups: dict[str, list[dict]] = {}
    for p in paths:
        p = Path(p)
        try:
            rel = p.relative_to(root)
        except ValueError:
            rel = Path(p.name)
        per_section = rel.parent != Path(".") and (names is None or rel.stem in names)
        step = rel.parent.as_posix() if per_section else rel.with_suffix("").as_posix()
        groups.setdefault(step, []).append(read_benchmark(p))
    out = []
    for step, items in groups.items():
        out.append({"step": step, "jobs": len(items),
                    "wall time, sum (s)": sum(i["s"] for i in items),
                    "wall time, longest job (s)": max(i["s"] for i in items),
                    "CPU time (s)": sum(i["cpu_s"] for i in items),
                    "peak memory (MB)": max(i["max_rss_mb"] for i in items)})
    return out
