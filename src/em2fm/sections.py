"""Section discovery and the deterministic train/val/test split.

A *section* is one serial tissue section: one folder under ``raw_dir`` holding
its Odemis exports. Sections are sorted in natural order (``S2`` before
``S10``). Unless the config names them, the **last** sections form the test
set and the ones just before them the validation set, as contiguous blocks:
neighbouring serial sections are ~100 nm apart and nearly identical, so
interleaving them would leak training data into the test set.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError

EXPORT_SUFFIXES = (".ome.tif", ".ome.tiff")
SPLITS = ("train", "val", "test")


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically (S2 < S10)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def is_export(path: Path) -> bool:
    """True for an OME-TIFF file name (case-insensitive), hidden files excluded."""
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(EXPORT_SUFFIXES)


def export_files(folder: str | Path) -> list[Path]:
    """All OME-TIFF exports under ``folder`` (recursively), sorted."""
    folder = Path(folder)
    return sorted((p for p in folder.rglob("*") if p.is_file() and is_export(p)),
                  key=lambda p: natural_key(str(p.relative_to(folder))))


def simulated_sections(n_sections: int) -> list[str]:
    """Names of the simulated sections: S001, S002, …"""
    return [f"S{k:03d}" for k in range(1, n_sections + 1)]


def discover_sections(raw_dir: str | Path) -> list[str]:
    """Section folders under ``raw_dir`` that hold at least one OME-TIFF export."""
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise ConfigError(
            f"raw_dir {str(raw)!r} is not a folder. Fix: pass the folder that holds one "
            "sub-folder per section, e.g. --config raw_dir=/data/exports"
        )
    found = [d.name for d in raw.iterdir()
             if d.is_dir() and not d.name.startswith(".") and export_files(d)]
    if not found:
        raise ConfigError(
            f"raw_dir {str(raw)!r} has no section folder with an OME-TIFF export "
            "(*.ome.tiff). Fix: put each section's Odemis exports in its own sub-folder "
            "(raw_dir/S001/…), exported as OME-TIFF"
        )
    return sorted(found, key=natural_key)


def split_sections(
    sections: list[str],
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    val: list[str] | None = None,
    test: list[str] | None = None,
) -> dict[str, str]:
    """Assign each section to ``train``, ``val`` or ``test`` (deterministic).

    Explicit ``val``/``test`` lists win; otherwise the last
    ``max(1, round(test_fraction·n))`` sections are test and the
    ``max(1, round(val_fraction·n))`` before them validation.

    Raises:
        ConfigError: unknown or overlapping names, or too few sections.
    """
    ordered = sorted(sections, key=natural_key)
    val, test = list(val or []), list(test or [])
    unknown = sorted(set(val + test) - set(ordered))
    if unknown:
        raise ConfigError(
            f"split names unknown section(s) {unknown}; sections are {ordered}. "
            "Fix: list only existing section folder names in split.val / split.test"
        )
    if set(val) & set(test):
        raise ConfigError(
            f"section(s) {sorted(set(val) & set(test))} are in both split.val and split.test. "
            "Fix: put each section in one of them only"
        )
    if not val and not test:
        n = len(ordered)
        n_test = max(1, math.floor(test_fraction * n + 0.5)) if test_fraction > 0 else 0
        n_val = max(1, math.floor(val_fraction * n + 0.5)) if val_fraction > 0 else 0
        if n - n_test - n_val < 1:
            raise ConfigError(
                f"{n} section(s) cannot be split into train/val/test "
                f"({n_val} val, {n_test} test leave no training section). Fix: add sections, "
                "lower split.val_fraction / split.test_fraction, or list split.val/split.test"
            )
        test = ordered[n - n_test:]
        val = ordered[n - n_test - n_val: n - n_test]
    out = {s: "train" for s in ordered}
    out.update({s: "val" for s in val})
    out.update({s: "test" for s in test})
    if "train" not in out.values():
        raise ConfigError("no training section left. Fix: keep at least one section out of "
                          "split.val and split.test")
    return out


@dataclass(frozen=True)
class Plan:
    """What the workflow runs on, resolved from the config at start."""

    simulated: bool
    raw_dir: str
    sections: list[str]
    split: dict[str, str]
    truth_dir: str | None

    def in_split(self, *names: str) -> list[str]:
        """Sections of the given split(s), in natural order."""
        return [s for s in self.sections if self.split[s] in names]


SIMULATED_EXPORTS = "results/simulate/exports"
SIMULATED_TRUTH = "results/simulate/truth"


def plan(config: dict) -> Plan:
    """Resolve sections, split and data folders from a validated config."""
    simulated = config.get("raw_dir") is None
    if simulated:
        raw_dir = SIMULATED_EXPORTS
        sections = simulated_sections(int(config["simulate"]["n_sections"]))
    else:
        raw_dir = str(config["raw_dir"])
        sections = discover_sections(raw_dir)
    wanted = config.get("sections")
    if wanted:
        missing = sorted(set(wanted) - set(sections))
        if missing:
            raise ConfigError(
                f"config 'sections' names {missing}, not found in {raw_dir!r} (found "
                f"{sections}). Fix: list existing section folders, or set sections: null"
            )
        sections = [s for s in sections if s in set(wanted)]
    sp = config.get("split", {})
    split = split_sections(sections, sp.get("val_fraction", 0.2), sp.get("test_fraction", 0.2),
                           sp.get("val"), sp.get("test"))
    truth = config.get("truth_dir") or (SIMULATED_TRUTH if simulated else None)
    if truth and not simulated and not Path(truth).is_dir():
        raise ConfigError(f"truth_dir {truth!r} is not a folder. Fix: point it at the "
                          "simulator's truth folder, or set truth_dir: null")
    return Plan(simulated=simulated, raw_dir=raw_dir, sections=sections, split=split,
                truth_dir=truth)
