import logging
import subprocess
import sys
from pathlib import Path

from em2fm.logs import setup_logging

SRC = Path(__file__).resolve().parents[1] / "src"


def test_logging_goes_to_the_file(tmp_path):
    setup_logging(str(tmp_path / "rule.log"))
    logging.getLogger("em2fm.x").info("hello %d", 3)
    logging.shutdown()
    assert "INFO em2fm.x: hello 3" in (tmp_path / "rule.log").read_text()


def _failing_script(tmp_path: Path, exc: str) -> subprocess.CompletedProcess:
    code = (f"import sys; sys.path.insert(0, {str(SRC)!r})\n"
            "from em2fm.logs import setup_logging\n"
            f"setup_logging({str(tmp_path / 'r.log')!r})\n"
            "from em2fm.odemis import ExportError\n"
            f"raise {exc}\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_user_errors_are_reported_without_traceback(tmp_path):
    r = _failing_script(tmp_path, "ExportError('a.ome.tiff', 'no pixel size', 'add it')")
    assert r.returncode == 1
    assert "a.ome.tiff: no pixel size. Fix: add it" in r.stderr
    assert "Traceback" not in r.stderr
    assert "Fix: add it" in (tmp_path / "r.log").read_text()


def test_bugs_keep_their_traceback(tmp_path):
    r = _failing_script(tmp_path, "KeyError('x')")
    assert r.returncode == 1 and "Traceback" in (tmp_path / "r.log").read_text()
