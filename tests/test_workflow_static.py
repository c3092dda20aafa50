"""Static checks of the workflow: rules, conda envs, scripts, lint and format."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((ROOT / "rules").glob("*.smk"))
STAGES = ["simulate", "ingest", "register", "tiles", "train", "predict", "evaluate", "report",
          "share"]

# import name -> conda-forge package
CONDA_NAME = {"numpy": "numpy", "scipy": "scipy", "tifffile": "tifffile",
              "SimpleITK": "simpleitk", "matplotlib": "matplotlib-base", "torch": "pytorch",
              "yaml": "pyyaml", "imagecodecs": "imagecodecs"}
# packages needed at run time by another one (tifffile decodes Odemis's LZW pages with it)
IMPLIED = {"tifffile": {"imagecodecs"}}
# snakemake and its own dependencies, imported lazily only in the Snakemake process at
# workflow start (em2fm.config.check validates simulate.params with jsonschema), never in a job
WORKFLOW_ONLY = {"snakemake", "jsonschema"}


def rules() -> dict[str, str]:
    """Rule name -> its text block."""
    out = {}
    for path in RULE_FILES:
        text = path.read_text()
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, re.M):
            out[m.group(1)] = m.group(2)
    return out


def _quoted(block: str, key: str) -> str:
    m = re.search(rf"^\s+{key}:\s*\n?\s*\"([^\"]+)\"", block, re.M)
    assert m, f"no {key}"
    return m.group(1)


def test_one_rule_file_script_module_and_test_per_stage():
    names = rules()
    for stage in STAGES:
        assert stage in names, f"rule {stage} missing"
        assert (ROOT / "rules" / f"{stage}.smk").exists()
        assert (ROOT / "scripts" / f"{stage}.py").exists()
        module = ROOT / "src" / "em2fm" / stage
        assert module.with_suffix(".py").exists() or (module / "__init__.py").exists()
        assert (ROOT / "tests" / f"test_{stage}.py").exists()


@pytest.mark.parametrize("rule", sorted(rules()))
def test_rule_has_log_benchmark_conda_threads_resources(rule):
    block = rules()[rule]
    if rule == "all":
        return
    for key in ("log:", "benchmark:", "conda:", "threads:", "resources:", "script:"):
        assert re.search(rf"^\s+{key}", block, re.M), f"rule {rule} lacks {key}"
    assert "lambda" not in block
    assert _quoted(block, "log").startswith("results/logs/")
    assert _quoted(block, "benchmark").startswith("results/benchmarks/")


def _module_file(dotted: str) -> Path | None:
    """Source file of an em2fm module (``em2fm.x.y`` → ``x/y.py`` or ``x/y/__init__.py``)."""
    path = ROOT / "src" / Path(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _module_imports(path: Path, seen: set[Path]) -> set[str]:
    """Third-party top-level imports of a file and of the em2fm modules it imports."""
    if path in seen:
        return set()
    seen.add(path)
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    src = ROOT / "src"
    package = path.parent  # the package of a module, or of an __init__.py
    for node in ast.walk(tree):
        mods: list[str] = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from .x import y / from ..x import y
                base = package
                for _ in range(node.level - 1):
                    base = base.parent
                prefix = ".".join(base.relative_to(src).parts)
                mods = [f"{prefix}.{node.module}"] if node.module else []
                mods += [f"{prefix}.{node.module + '.' if node.module else ''}{a.name}"
                         for a in node.names]
            else:
                mods = [node.module or ""]
                mods += [f"{node.module}.{a.name}" for a in node.names]
        for mod in mods:
            top = mod.split(".")[0]
            if top == "em2fm":
                module = _module_file(mod)
                if module is not None:
                    out |= _module_imports(module, seen)
            elif top and top not in sys.stdlib_module_names and top not in WORKFLOW_ONLY:
                out.add(top)
    return out


def test_module_imports_follow_subpackages():
    found = _module_imports(ROOT / "scripts" / "simulate.py", set())
    assert {"numpy", "scipy", "tifffile"} <= found, found


@pytest.mark.parametrize("rule", [r for r in sorted(rules()) if r != "all"])
def test_conda_env_is_pinned_and_covers_the_script(rule):
    block = rules()[rule]
    env_path = (ROOT / "rules" / _quoted(block, "conda")).resolve()
    script = (ROOT / "rules" / _quoted(block, "script")).resolve()
    assert env_path.exists() and script.exists()
    env = yaml.safe_load(env_path.read_text())
    assert "conda-forge" in env["channels"]
    deps = {}
    for dep in env["dependencies"]:
        name, _, version = dep.partition("=")
        assert re.fullmatch(r"=?\d+(\.\d+)+", version.strip()), f"{dep} is not pinned"
        deps[name.strip()] = version
    assert "python" in deps
    needed = _module_imports(script, set())
    for mod in list(needed):
        needed |= IMPLIED.get(mod, set())
    for mod in needed:
        assert mod in CONDA_NAME, f"{script.name} imports {mod}: add it to CONDA_NAME"
        assert CONDA_NAME[mod] in deps, f"{env_path.name} lacks {CONDA_NAME[mod]} ({mod})"


def test_scripts_are_thin_and_log_first():
    for script in sorted((ROOT / "scripts").glob("*.py")):
        text = script.read_text()
        assert 'Path(snakemake.scriptdir).parent / "src"' in text
        lines = [ln for ln in text.splitlines() if ln.strip()]
        first_call = next(i for i, ln in enumerate(lines) if ln.startswith("setup_logging("))
        assert "snakemake.log[0]" in lines[first_call]
        # one call into the package (run, or run_<step> for a stage with several rules)
        assert sum(1 for ln in lines if re.match(r"\w+\.run(_\w+)?\(", ln)) == 1, script.name
        assert len(lines) < 40, f"{script.name} is not thin"


def test_snakemake_lint_is_clean(tmp_path):
    r = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--cores", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Lints for" not in r.stdout, r.stdout


def test_snakefmt_is_clean():
    r = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_is_clean():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "scripts", "tests",
                        "benchmarks"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
