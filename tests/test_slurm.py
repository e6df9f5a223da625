"""The Slurm launcher against a real one-node Slurm cluster (``tools/slurm-local``): an experiment as a job array
waited for here, the same with its analyses as an ``afterok`` job, a training job requeued mid-run that resumes
bitwise, and the inline, ``--jobs 2`` and Slurm launchers giving the same bits.

Where the cluster can't be started (no root, no packages) the tests skip with the tool's reason; in CI
(``CI=true``) they fail instead. Job states are read from ``sacct`` (slurmdbd) and ``scontrol``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import once_per_session
from snncka.launch import ModelJob, SlurmLauncher, trained_epochs
from snncka.training import TrainConfig, train

TOOL = Path(__file__).resolve().parents[1] / "tools" / "slurm-local"
# conftest's reproduce_fig3 (fig3's two smoke models, one epoch, 64 CKA images) on Slurm, one CPU per job
SLURM = ["--launcher", "slurm", "--cpus-per-task", "1", "--time", "30"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="Slurm: Linux only")]


def _sh(*cmd: str, check: bool = True, timeout: float = 60) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout).stdout


@pytest.fixture(scope="session")
def cluster() -> None:
    """A one-node cluster: ``tools/slurm-local start`` (installs and starts it; a no-op when it runs), stopped at
    the end if this session started it."""
    up = subprocess.run([str(TOOL), "status"], capture_output=True, text=True).returncode == 0
    if not up:
        r = subprocess.run([str(TOOL), "start"], capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            reason = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit status {r.returncode}"
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI needs the Slurm cluster: {reason}")
            pytest.skip(reason)
    yield
    if not up:
        subprocess.run([str(TOOL), "stop"], capture_output=True, text=True, timeout=300)


def _sacct(*job_ids: str) -> dict[str, dict[str, str]]:
    """sacct's JobID, JobName, State, Start and End of the jobs (array tasks as ``<id>_<i>``), steps left out."""
    args = [a for j in job_ids for a in ("-j", j)]
    text = _sh("sacct", "-X", "-n", "--parsable2", "-o", "JobID,JobName,State,Start,End", *args)
    rows = [ln.split("|") for ln in text.splitlines() if ln.strip()]
    return {r[0]: {"name": r[1], "state": r[2], "start": r[3], "end": r[4]} for r in rows}


def _wait_sacct(job_ids: list[str], timeout: float = 900) -> dict[str, dict[str, str]]:
    """sacct once every job has ended (bounded wait)."""
    end = time.monotonic() + timeout
    while True:
        info = _sacct(*{j.split("_")[0] for j in job_ids})
        if all(j in info and info[j]["state"] not in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING")
               for j in job_ids):
            return info
        assert time.monotonic() < end, f"jobs did not end in {timeout} s: {info}"
        time.sleep(1)


def _submitted(stderr: str) -> list[str]:
    return re.findall(r"^submitted \S+: job (\S+)$", stderr, flags=re.M)


@pytest.fixture(scope="session")
def waited(cluster: None, tmp_path_factory: pytest.TempPathFactory,
           reproduce_fig3) -> tuple[Path, Path, list[str], float]:
    """``reproduce fig3 --launcher slurm --wait``, once per session (every xdist worker): (out, cache, training
    job ids, seconds)."""
    def make(root: Path) -> None:
        t0 = time.perf_counter()
        r = reproduce_fig3(root / "out", root / "cache", *SLURM, "--wait")
        (root / "jobs.json").write_text(json.dumps({"ids": _submitted(r.stderr), "seconds": time.perf_counter() - t0}))

    root = once_per_session(tmp_path_factory, "slurm-wait", make)
    jobs = json.loads((root / "jobs.json").read_text())
    return root / "out", root / "cache", jobs["ids"], jobs["seconds"]


def test_an_experiment_as_a_slurm_job_array_waited_for_here(waited) -> None:
    out, cache, ids, seconds = waited
    assert len(ids) == 2 and {i.split("_")[0] for i in ids} == {ids[0].split("_")[0]}  # one array, two tasks
    info = _wait_sacct(ids, timeout=60)
    print(f"--wait: {seconds:.0f} s; sacct: {info}")
    assert [info[i]["state"] for i in ids] == ["COMPLETED", "COMPLETED"]
    assert {info[i]["name"] for i in ids} == {"snncka-train"}
    assert (out / "report.html").is_file()
    assert (out / "results" / "compare-resnet20-for-resnet110.npz").is_file()
    assert len(list(cache.glob("*/last.pt"))) == 2


def test_the_analyses_follow_the_training_as_an_afterok_job(cluster: None, tmp_path: Path, reproduce_fig3) -> None:
    t0 = time.perf_counter()
    r = reproduce_fig3(tmp_path / "out", tmp_path / "cache", *SLURM)
    ids = _submitted(r.stderr)
    analysis = re.search(r"analysis job (\d+) submitted", r.stdout).group(1)
    # The training jobs take seconds at least, so the analysis job still waits on them here.
    dep = re.search(r"Dependency=(\S+)", _sh("scontrol", "show", "job", analysis)).group(1)
    assert dep == f"afterok:{ids[0].split('_')[0]}_*(unfulfilled)", dep
    follow = re.search(r"^follow it: sacct -j (\d+); tail -f (\S+)$", r.stdout, flags=re.M)
    assert follow and follow.group(1) == analysis
    info = _wait_sacct([*ids, analysis])
    print(f"no --wait: {time.perf_counter() - t0:.0f} s; dependency {dep}; sacct: {info}")
    assert {info[j]["state"] for j in [*ids, analysis]} == {"COMPLETED"}
    assert info[analysis]["name"] == "snncka-analyse"
    assert info[analysis]["start"] >= max(info[i]["end"] for i in ids)  # ISO times sort as strings
    assert (tmp_path / "out" / "report.html").is_file() and Path(follow.group(2)).is_file()


def test_a_requeued_training_job_resumes_from_last_pt_bitwise(cluster: None, tmp_path: Path,
                                                             same_checkpoints) -> None:
    """``scontrol requeue`` of a running training job (as a preemption does): Slurm kills it and runs it again,
    it resumes from ``last.pt``, and its final checkpoint equals an uninterrupted run's bit for bit.

    submitit lets the job run on through SIGTERM until Slurm's SIGKILL (KillWait, 5 s on the test cluster), so
    the model has enough epochs (about 0.2 s each) to be still training then."""
    cfg = TrainConfig(model="resnet8", width=0.5, data="digits", spiking=False, T=1, epochs=100, batch_size=64,
                      device="cpu", progress=False)
    slurm = SlurmLauncher(tmp_path / "slurm", time_min=30, cpus_per_task=1)
    job = ModelJob("requeued", cfg, tmp_path / "cache")
    t0 = time.perf_counter()
    (submitted,) = slurm.submit([job])
    jid = str(submitted.job_id)
    end = time.monotonic() + 600
    while (done := trained_epochs(job.run_dir)) < 1:  # requeue once an epoch is in last.pt
        assert time.monotonic() < end, "the job wrote no checkpoint in 600 s"
        time.sleep(0.1)
    assert done < cfg.epochs, "the job finished before it could be requeued: give it more epochs"
    _sh("scontrol", "requeue", jid)
    # Slurm holds a requeued batch job back for 120 s (BeginTime) once its first run has ended; shorten the wait,
    # but only once the node has cleaned up after the first run: a rerun started in the very second the first was
    # cancelled has been seen to fail at once (sacct: FAILED, exit 1), which the real hold exists to prevent.
    while "JobState=PENDING" not in (show := _sh("scontrol", "show", "job", jid)):
        assert time.monotonic() < end, show
        time.sleep(0.2)
    while subprocess.run(["scontrol", "listpids", jid.split("_")[0]], capture_output=True, text=True).returncode == 0:
        assert time.monotonic() < end, "the first run's processes did not end"
        time.sleep(0.5)
    time.sleep(5)
    _sh("scontrol", "update", f"jobid={jid}", "StartTime=now")
    assert slurm.result(submitted) == str(job.run_dir)  # robust to a stale FAILED that sacct may show around a requeue
    _wait_sacct([jid], timeout=120)
    info = _sh("sacct", "-D", "-X", "-n", "--parsable2", "-o", "JobID,State,Start,End", "-j", jid.split("_")[0])
    states = [ln.split("|")[1] for ln in info.splitlines() if ln.strip()]
    print(f"requeue after epoch {done}: {time.perf_counter() - t0:.0f} s; sacct -D: {info.strip()!r}")
    assert states == ["REQUEUED", "COMPLETED"], info
    log = Path(str(submitted.paths.stdout)).read_text() + Path(str(submitted.paths.stderr)).read_text()
    assert log.count("Starting with JobEnvironment") == 2, log
    resumed = re.search(r"^resuming \S+ from epoch (\d+)$", log, flags=re.M)
    assert resumed and done <= int(resumed.group(1)) < cfg.epochs, log

    train(cfg, tmp_path / "reference")  # the reference: the same model trained without interruption, here
    same_checkpoints(job.run_dir / "last.pt", tmp_path / "reference" / "last.pt")


def test_inline_local_and_slurm_launchers_give_the_same_bits(waited, fig3_launchers, same_run) -> None:
    """fig3 (two models, the CKA analyses) inline, with ``--jobs 2`` and on Slurm: equal checkpoints and results
    (inline against ``--jobs 2`` is tests/test_threads.py's, on the same runs)."""
    slurm_out, slurm_cache, _, _ = waited
    same_run((slurm_out, slurm_cache), fig3_launchers["inline"])
