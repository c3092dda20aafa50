"""Section discovery, roles and the deterministic train/val/test split.

A *section* is one serial tissue section: one folder under ``raw_dir`` holding
its Odemis exports. Sections are sorted in natural order (``S2`` before
``S10``). Each section has a **role**: ``train``, ``val``, ``test`` or
``predict`` (EM only: never registered, trained on or evaluated; its FM, if
any, is never read).

Roles come from the optional section sheet (``section_sheet``, a TSV with the
columns ``section``, ``role`` and optionally ``em_stream``). Without a sheet, a
section folder whose exports hold no fluorescence image is a ``predict``
section, and the others are split: the **last** sections form the test set and
the ones just before them the validation set, as contiguous blocks:
neighbouring serial sections are ~100 nm apart and nearly identical, so
interleaving them would leak training data into the test set.

A split that cannot give a training section is not an error at start: it is
recorded (:attr:`Plan.split_error`) and raised only by the rules that train,
so any single section can be ingested, registered and predicted.

Section names are wildcard values and file names under ``results/``: a folder
whose name is not made of ``A-Z a-z 0-9 . _ -`` (or starts with ``.`` or
``-``) gets a safe name (:func:`safe_name`); the folder name is kept for
display and for reading its exports. Two folders with one safe name, and a
folder name holding ``<name>`` (a Snakemake path variable in any input path),
are rejected at start with the fix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError

EXPORT_SUFFIXES = (".ome.tif", ".ome.tiff")
SPLITS = ("train", "val", "test")
ROLES = (*SPLITS, "predict")
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
#: What Snakemake reads as a path variable in any input path (``<name>``).
_PATHVAR = re.compile(r"<[a-z][a-z0-9_]*>")


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


def safe_name(name: str) -> str:
    """A name usable as a wildcard value and a file name: runs of characters other than
    ``A-Z a-z 0-9 . _ -`` become ``_``; leading and trailing ``.``, ``_``, ``-`` are dropped."""
    if _SAFE.fullmatch(name):
        return name
    out = _UNSAFE_CHARS.sub("_", name).strip("._-")
    return out or "section"


def check_path_variables(raw_dir: str, folders: list[str]) -> None:
    """Reject folder names holding ``<name>``: Snakemake expands it as a path variable in
    every input path, so the section's exports could not be inputs of a rule.

    Raises:
        ConfigError: naming the folder and a safe name to rename it to.
    """
    if _PATHVAR.search(raw_dir):
        raise ConfigError(f"raw_dir {raw_dir!r} holds {_PATHVAR.search(raw_dir).group()}, "
                          "which Snakemake reads as a path variable. Fix: rename the folder "
                          "(no '<' '>' in its path)")
    for f in folders:
        if _PATHVAR.search(f):
            raise ConfigError(
                f"section folder {f!r} in {raw_dir!r}: Snakemake reads "
                f"{_PATHVAR.search(f).group()!r} in a path as a path variable, so its exports "
                f"cannot be read. Fix: rename the folder, e.g. to {safe_name(f)!r}")


def safe_names(folders: list[str]) -> dict[str, str]:
    """Map each section folder name to its safe name (:func:`safe_name`).

    Raises:
        ConfigError: two folders would get the same safe name.
    """
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for f in folders:
        s = safe_name(f)
        if s in seen:
            raise ConfigError(
                f"section folders {seen[s]!r} and {f!r} both map to the safe name {s!r} "
                "(section names may only hold A-Z a-z 0-9 . _ -). Fix: rename one of the "
                "folders")
        seen[s] = f
        out[f] = s
    return out


def folder_has_fm(folder: str | Path) -> bool:
    """True when an export of the section folder holds a fluorescence image (metadata only).

    A file that cannot be read counts as holding FM: ingest then reports the problem.
    """
    from .odemis import ExportError, read_file

    for path in export_files(folder):
        try:
            f = read_file(path, load_pixels=False)
        except (ExportError, OSError, ValueError):
            return True
        if any(img.is_fluorescence for img in f.images):
            return True
    return False


SHEET_COLUMNS = ("section", "role", "em_stream")


def read_sheet(path: str | Path, folders: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Roles (and SEM streams) from a section sheet.

    The sheet is a tab-separated file with a header line naming the columns ``section``
    (folder name under ``raw_dir``), ``role`` (train, val, test or predict) and optionally
    ``em_stream`` (SEM stream name; empty: ``ingest.em_stream``). Blank lines and lines
    starting with ``#`` are skipped.

    Returns:
        ``(roles, em_streams)``, keyed by folder name, in the sheet's order.

    Raises:
        ConfigError: naming the sheet, the line and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"section_sheet {str(path)!r} is not a file. Fix: write a TSV with "
                          "the columns section and role (and optionally em_stream), or set "
                          "section_sheet: null")
    lines = [(i, line.rstrip("\r\n")) for i, line in
             enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"{path}: the section sheet is empty. Fix: add a header line "
                          "'section<TAB>role' and one line per section")
    header = [h.strip().lower() for h in lines[0][1].split("\t")]
    missing = [c for c in ("section", "role") if c not in header]
    unknown = [c for c in header if c not in SHEET_COLUMNS]
    if missing or unknown:
        raise ConfigError(
            f"{path}: line {lines[0][0]}: the header {header} "
            + (f"lacks {missing}" if missing else f"has unknown column(s) {unknown}")
            + f". Fix: a tab-separated header with the columns {list(SHEET_COLUMNS)} "
            "(em_stream optional)")
    roles: dict[str, str] = {}
    streams: dict[str, str] = {}
    for no, line in lines[1:]:
        cells = [c.strip() for c in line.split("\t")]
        row = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=False))
        name, role = row["section"], row["role"].lower()
        where = f"{path}: line {no}"
        if len(cells) > len(header):
            raise ConfigError(f"{where}: {len(cells)} cells for {len(header)} columns. Fix: "
                              "separate the columns by one tab each")
        if role not in ROLES:
            raise ConfigError(f"{where}: role {row['role']!r} of section {name!r} is not one "
                              f"of {list(ROLES)}. Fix: use one of them")
        if name in roles:
            raise ConfigError(f"{where}: section {name!r} is listed twice. Fix: keep one line "
                              "per section")
        if name not in folders:
            raise ConfigError(f"{where}: section {name!r} is not a section folder with an "
                              f"OME-TIFF export (found {folders}). Fix: list existing folders "
                              "of raw_dir")
        roles[name] = role
        if row.get("em_stream"):
            streams[name] = row["em_stream"]
    if not roles:
        raise ConfigError(f"{path}: the section sheet lists no section. Fix: add one line "
                          "per section (section<TAB>role)")
    return roles, streams


@dataclass(frozen=True)
class Plan:
    """What the workflow runs on, resolved from the config at start.

    Attributes:
        simulated: the embedded simulated dataset (no ``raw_dir``).
        raw_dir: folder of the section folders.
        sections: safe section names (wildcard values), natural order.
        split: role of each section (train, val, test or predict).
        truth_dir: ground truth (evaluation only), or None.
        folders: folder name under ``raw_dir`` of each section (its display name).
        em_streams: SEM stream of each section (None: the finest).
        split_error: why no model can be trained on these sections (None: it can);
            raised by :meth:`require_training`.
        model: path of a trained model to apply (``model.path``, ``model=PATH``): no
            training.
    """

    simulated: bool
    raw_dir: str
    sections: list[str]
    split: dict[str, str]
    truth_dir: str | None
    folders: dict[str, str] = field(default_factory=dict)
    em_streams: dict[str, str | None] = field(default_factory=dict)
    split_error: str | None = None
    model: str | None = None

    def in_split(self, *names: str) -> list[str]:
        """Sections of the given role(s), in natural order."""
        return [s for s in self.sections if self.split[s] in names]

    @property
    def with_fm(self) -> list[str]:
        """Sections whose FM is read (registered, tiled, evaluated): all but ``predict``."""
        return self.in_split(*SPLITS)

    @property
    def em_only(self) -> list[str]:
        """``predict`` sections: EM only."""
        return self.in_split("predict")

    def folder(self, section: str) -> str:
        """Folder name (display name) of a section."""
        return self.folders.get(section, section)

    def require_training(self) -> None:
        """Raise the reason no model can be trained (called by the rules that train)."""
        if self.model is not None:
            raise ConfigError(f"model={self.model} is given, so nothing is trained; a target "
                              "that needs training was requested. Fix: drop model= to train, "
                              "or request predictions/the report")
        if self.split_error:
            raise ConfigError(self.split_error)


SIMULATED_EXPORTS = "results/simulate/exports"
SIMULATED_TRUTH = "results/simulate/truth"


def plan(config: dict) -> Plan:
    """Resolve sections, roles and data folders from a validated config (see module doc)."""
    simulated = config.get("raw_dir") is None
    if simulated:
        raw_dir = SIMULATED_EXPORTS
        folders = simulated_sections(int(config["simulate"]["n_sections"]))
    else:
        raw_dir = str(config["raw_dir"])
        folders = discover_sections(raw_dir)
    wanted = config.get("sections")
    if wanted:
        missing = sorted(set(wanted) - set(folders))
        if missing:
            raise ConfigError(
                f"config 'sections' names {missing}, not found in {raw_dir!r} (found "
                f"{folders}). Fix: list existing section folders, or set sections: null")
        folders = [s for s in folders if s in set(wanted)]
    model = (config.get("model") or {}).get("path")
    sheet = config.get("section_sheet")
    em_stream = (config.get("ingest") or {}).get("em_stream")
    split_error = None
    if sheet:
        if simulated:
            raise ConfigError("section_sheet needs raw_dir (the sheet names section folders). "
                              "Fix: set raw_dir, or section_sheet: null")
        roles, streams = read_sheet(sheet, folders)
        folders = [f for f in folders if f in roles]
        if model is None and "train" not in roles.values():
            split_error = (f"the section sheet {sheet} gives no section the role train, so no "
                           "model can be trained. Fix: give at least one section with FM the "
                           "role train (and one val), or apply a trained model with "
                           "--config model=PATH")
    else:
        streams = {}
        has_fm = {f: True if simulated else folder_has_fm(Path(raw_dir) / f) for f in folders}
        fm_folders = [f for f in folders if has_fm[f]]
        roles = {f: "predict" for f in folders if not has_fm[f]}
        sp = config.get("split", {})
        if model is not None:
            roles.update({f: "test" for f in fm_folders})
        else:
            try:
                roles.update(split_sections(
                    fm_folders, sp.get("val_fraction", 0.2), sp.get("test_fraction", 0.2),
                    sp.get("val"), sp.get("test")) if fm_folders else {})
            except ConfigError as exc:
                split_error = str(exc)
                roles.update({f: "test" for f in fm_folders})
            if not fm_folders:
                split_error = (f"no section in {raw_dir!r} has FM, so no model can be "
                               "trained. Fix: add sections with FM exports, or apply a "
                               "trained model with --config model=PATH")
    if not simulated:
        check_path_variables(raw_dir, folders)
    names = safe_names(folders)
    sections = [names[f] for f in folders]
    truth = config.get("truth_dir") or (SIMULATED_TRUTH if simulated else None)
    if truth and not simulated and not Path(truth).is_dir():
        raise ConfigError(f"truth_dir {truth!r} is not a folder. Fix: point it at the "
                          "simulator's truth folder, or set truth_dir: null")
    if model is not None and not Path(model).is_file():
        raise ConfigError(f"model {model!r} is not a file. Fix: pass the model.pt of an "
                          "earlier run, e.g. --config model=results/model/model.pt")
    return Plan(simulated=simulated, raw_dir=raw_dir, sections=sections,
                split={names[f]: roles[f] for f in folders}, truth_dir=truth,
                folders={names[f]: f for f in folders},
                em_streams={names[f]: streams.get(f, em_stream) for f in folders},
                split_error=split_error, model=model)
