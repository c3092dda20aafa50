"""The SLURM workflow profile against a real single-node SLURM cluster on this machine.

tests/slurm/setup.sh installs slurm-wlm and munge and starts the daemons, rewriting
/etc/slurm: it needs root on a disposable Debian machine. It therefore runs only where it is
asked for, with ``EM2FM_TEST_SLURM=1`` in the environment (``.ci/run`` sets it; CI runs as
root on a disposable machine), and is skipped with that reason everywhere else. Where it is
asked for, it fails, it does not skip, when the cluster cannot be set up.

The run uses profiles/slurm as users do, plus four flags for this test cluster only:
  --slurm-status-command squeue  this cluster has no accounting (slurmdbd); the plugin
                                 picks sacct whenever the binary exists, and sacct fails
  --max-threads 2                the node has 2 CPUs; train asks for 8, which SLURM rejects
  --slurm-init-seconds-before-status-checks 2   poll soon (the default waits 40 s)
  --slurm-keep-successful-logs   keep the per-job SLURM logs as evidence
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from em2fm.evaluate import read_tsv

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "tests" / "slurm" / "setup.sh"
TINY = ROOT / "tests" / "data" / "tiny.yaml"
# jobs per rule on the tiny config: 3 sections, of which 2 (train, val) train the round model
JOBS = {"simulate": 3, "ingest": 3, "register": 3, "tiles_round": 2, "train_round": 1,
        "register_refine": 3, "register_final": 3, "tiles": 3, "train": 1, "predict": 3,
        "evaluate": 1, "report": 1}
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("EM2FM_TEST_SLURM") != "1",
                       reason="installs and starts SLURM as root (rewrites /etc/slurm): runs "
                              "only with EM2FM_TEST_SLURM=1, as .ci/run sets it"),
]


def _tail(text: str | bytes | None, n: int = 6000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def _cancel(run_id: str | None) -> None:
    if run_id:
        subprocess.run(["scancel", "--name", run_id], capture_output=True, timeout=30)


def test_workflow_profile_on_real_slurm(tmp_path):
    setup = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=600)
    if setup.returncode:
        pytest.fail(f"{SETUP} failed ({setup.returncode}); it needs root on a Debian machine."
                    f"\n{_tail(setup.stdout)}\n{_tail(setup.stderr)}")

    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "snakemake", "results/report.html",
           "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--workflow-profile", str(ROOT / "profiles" / "slurm"),
           "--slurm-status-command", "squeue", "--max-threads", "2",
           "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs",
           "--configfile", str(ROOT / "config.yaml"), str(TINY)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        out = _tail(e.stdout, 20_000) + _tail(e.stderr, 20_000)
        m = re.search(r"SLURM run ID: (\S+)", out)
        _cancel(m and m.group(1))
        queue = subprocess.run(["squeue", "--states=all"], capture_output=True, text=True)
        pytest.fail(f"snakemake through SLURM timed out:\n{out[-8000:]}\n{queue.stdout}")
    out = r.stdout + r.stderr
    m = re.search(r"SLURM run ID: (\S+)", out)
    run_id = m and m.group(1)
    if r.returncode:
        _cancel(run_id)
        raise AssertionError(f"snakemake through SLURM failed ({r.returncode}):\n"
                             f"{r.stdout[-4000:]}\n{r.stderr[-8000:]}")
    assert "Using workflow specific profile" in out and run_id, out[-4000:]

    # the results, as in the local end-to-end test
    res = work / "results"
    assert (res / "report.html").stat().st_size > 10_000
    rows = read_tsv(res / "metrics.tsv")
    assert {(r["section"], r["channel"]) for r in rows} == {
        (s, c) for s in ("S001", "S002", "S003") for c in ("Hoechst", "Insulin")}

    # every job went through sbatch ...
    submitted = dict(re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.",
                                out))
    assert len(submitted) == sum(JOBS.values()), out[-4000:]
    # ... SLURM ran them all to completion (job name = the run ID) ...
    q = subprocess.run(["squeue", "--states=all", "--noheader", "--name", run_id,
                        "--format=%i|%T"], capture_output=True, text=True, timeout=60)
    assert q.returncode == 0, q.stderr
    states = dict(line.split("|") for line in q.stdout.split())
    assert states == {i: "COMPLETED" for i in submitted}, (states, submitted)
    # ... and slurmd wrote each job's output where the plugin asked, per rule
    logs = work / ".snakemake" / "slurm_logs"
    for rule, n in JOBS.items():
        found = sorted((logs / f"rule_{rule}").rglob("*.log"))
        assert len(found) == n, (rule, found)
        for log in found:
            assert Path(submitted[log.stem]).resolve() == log.resolve()
            text = log.read_text()
            assert "--executor slurm-jobstep" in text, text[-3000:]
            assert f"Finished jobid: 0 (Rule: {rule})" in text, text[-3000:]
