"""Launchers and the model cache's lock: parallel processes and submitit's local executor train exactly what the
inline run trains (bitwise on CPU), and a second process waits for a model another one is training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from snncka import paper  # noqa: F401  (the paper's experiment IDs)
from snncka import runner as reproduce
from snncka.checkpoint import load_checkpoint
from snncka.files import file_lock
from snncka.launch import (
    InlineLauncher,
    LocalLauncher,
    ModelJob,
    SlurmLauncher,
    TrainTask,
    parse_minutes,
    run_folder,
)
from snncka.training import TrainConfig, train

TINY = dict(model="resnet8", width=0.5, data="digits", epochs=1, batch_size=64, device="cpu", progress=False)


def _jobs(cache: Path) -> list[ModelJob]:
    return [ModelJob("ann", TrainConfig(spiking=False, T=1, **TINY), cache),
            ModelJob("snn", TrainConfig(spiking=True, T=2, **TINY), cache)]


def _assert_same_models(a: Path, b: Path) -> None:
    for ja, jb in zip(_jobs(a), _jobs(b), strict=True):
        sa = load_checkpoint(ja.run_dir / "last.pt")["model"]
        sb = load_checkpoint(jb.run_dir / "last.pt")["model"]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def inline_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: both tiny models trained one after another in this process (the trainer uses the
    config's thread count, whatever this process's is)."""
    cache = tmp_path_factory.mktemp("inline")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # not the training threads (TrainConfig.threads, 1): training must not care
    try:
        InlineLauncher(progress=False).train(_jobs(cache))
        assert torch.get_num_threads() == 2  # the caller's threads come back after training
    finally:
        torch.set_num_threads(threads)
    return cache


def test_local_launcher_trains_in_parallel_processes_bitwise_like_inline(tmp_path: Path, inline_cache: Path,
                                                                          capsys) -> None:
    LocalLauncher(jobs=2, progress=False).train(_jobs(tmp_path))
    assert "2 at a time" in capsys.readouterr().err
    _assert_same_models(tmp_path, inline_cache)
    for job in _jobs(tmp_path):
        assert json.loads((job.run_dir / "config.json").read_text())["train"]["threads"] == 1


def test_slurm_launcher_through_submitits_local_executor(tmp_path: Path, inline_cache: Path) -> None:
    pytest.importorskip("submitit")
    slurm = SlurmLauncher(tmp_path / "slurm", cluster="local", gpus_per_model=0, time_min=10, cpus_per_task=1,
                          extra={"local_setup": ["export OMP_NUM_THREADS=1"]})
    jobs = slurm.submit(_jobs(tmp_path / "cache"))
    assert len(jobs) == 2
    assert {Path(j.result()) for j in jobs} == {j.run_dir for j in _jobs(tmp_path / "cache")}
    _assert_same_models(tmp_path / "cache", inline_cache)
    # a second submission finds both models in the cache and trains nothing
    mtimes = [(j.run_dir / "last.pt").stat().st_mtime_ns for j in _jobs(tmp_path / "cache")]
    slurm.train(_jobs(tmp_path / "cache"))
    assert mtimes == [(j.run_dir / "last.pt").stat().st_mtime_ns for j in _jobs(tmp_path / "cache")]


def test_a_preempted_job_is_requeued_as_the_same_task() -> None:
    pytest.importorskip("submitit")
    cfg = TrainConfig(**TINY)
    again = TrainTask().checkpoint(cfg, "/cache")
    assert isinstance(again.function, TrainTask) and again.args == (cfg, "/cache")


def test_parse_minutes() -> None:
    assert [parse_minutes(t) for t in ("90", 45, "1:30:00", "0:10", "2-00:00:00", "0:00:30")] == [
        90, 45, 90, 10, 2880, 1]
    for bad in ("soon", "0", "1:2:3:4"):
        with pytest.raises(ValueError, match="--time"):
            parse_minutes(bad)


def test_a_second_process_waits_for_the_model_and_reuses_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cfg = TrainConfig(spiking=False, T=1, **TINY)
    run = run_folder(cfg, cache)
    code = ("import sys; from snncka.launch import ensure_trained; from snncka.training import TrainConfig; "
            f"ensure_trained(TrainConfig(**{TINY!r}, spiking=False, T=1), sys.argv[1])")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with file_lock(run / ".lock"):  # this process is "training" the model
        other = subprocess.Popen([sys.executable, "-c", code, str(cache)], stderr=subprocess.PIPE, text=True,
                                 env=env)
        said = ""
        deadline = time.monotonic() + 120
        while "waiting for another process" not in said and time.monotonic() < deadline:
            line = other.stderr.readline()
            if not line and other.poll() is not None:
                break
            said += line
        assert "waiting for another process" in said and str(run) in said, said
        train(cfg, run)
        trained = (run / "last.pt").stat().st_mtime_ns
    _, err = other.communicate(timeout=120)
    assert other.returncode == 0, said + err
    assert (run / "last.pt").stat().st_mtime_ns == trained  # reused, not trained again
    lines = [ln for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    assert [json.loads(ln)["epoch"] for ln in lines] == [1]


@pytest.mark.slow
def test_slurm_submission_of_a_whole_experiment(tmp_path: Path) -> None:
    """Models as an array, the analyses as a job after them (submitit's local executor): a full report."""
    pytest.importorskip("submitit")
    slurm = SlurmLauncher(tmp_path / "slurm", cluster="local", gpus_per_model=0, time_min=20, cpus_per_task=1)
    trained, analysis = reproduce.submit("fig3", "smoke", tmp_path / "out", slurm, cache=tmp_path / "cache",
                                         epochs=1, cka_images=64, device="cpu")
    assert len(trained) == 2
    report = Path(analysis.result())
    assert report.is_file() and (tmp_path / "out" / "results" / "blocks-resnet20-for-resnet110.json").is_file()


@pytest.mark.slow
def test_a_large_model_trains_with_ddp_over_the_jobs_tasks(tmp_path: Path) -> None:
    """A model above ``ddp_min_hours`` is one job of ``gpus_per_model`` tasks (here: CPU processes, gloo)."""
    pytest.importorskip("submitit")
    slurm = SlurmLauncher(tmp_path / "slurm", cluster="local", gpus_per_model=2, ddp_min_hours=1.0, time_min=10,
                          cpus_per_task=1)
    big, small = _jobs(tmp_path / "cache")
    big.hours, small.hours = 2.0, 0.5
    array, ddp = slurm.submit([big, small])  # the array of small models first, then one job per large one
    assert array.num_tasks == 1 and ddp.num_tasks == 2
    assert array.result() == str(small.run_dir) and ddp.results() == [str(big.run_dir)] * 2
    lines = (big.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines if ln.strip()] == [1]  # only rank 0 writes
    assert load_checkpoint(big.run_dir / "last.pt")["epoch"] == 1 and (small.run_dir / "last.pt").is_file()
