"""Launchers around faults: ``--launcher slurm`` without a reachable Slurm is a one-line error (not a silent local
run), and killing or terminating the main process of ``reproduce --jobs 2`` leaves no worker or resource tracker
behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def _reproduce(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snncka.cli", "reproduce", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_slurm_launcher_without_slurm_is_a_one_line_error(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    env = {**ENV, "PATH": str(Path(sys.executable).parent)}  # this Python only: no sbatch
    r = _reproduce("fig2", "--launcher", "slurm", "--partition", "gpu", "--out", str(tmp_path / "out"),
                   env=env, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "Error: --launcher slurm: no Slurm here (sbatch is not on PATH); start one (tools/slurm-local start) or "
        "use --launcher submitit-local to run the jobs here"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.pkl"))  # nothing submitted


@pytest.mark.skipif(shutil.which("scontrol") is None, reason="needs Slurm's client commands (scontrol)")
def test_slurm_launcher_with_a_controller_that_does_not_answer_is_a_one_line_error(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    conf = tmp_path / "slurm.conf"  # a cluster whose controller port nobody listens on
    conf.write_text("ClusterName=gone\nSlurmctldHost=localhost\nSlurmctldPort=9\nNodeName=localhost CPUs=1\n"
                    "PartitionName=p Nodes=localhost\n")
    r = _reproduce("fig2", "--launcher", "slurm", "--out", str(tmp_path / "out"),
                   env={**ENV, "SLURM_CONF": str(conf)}, cwd=tmp_path)
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("Error: --launcher slurm: the Slurm controller does not answer (") and "DOWN" in line
    assert line.endswith("or use --launcher submitit-local to run the jobs here")


def _children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` and their command lines (from /proc)."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out[int(p.name)] = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has ended; only its parent's wait is missing


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_the_main_process_ends_its_workers_and_resource_tracker(sig: int, tmp_path: Path) -> None:
    main = subprocess.Popen([sys.executable, "-m", "snncka.cli", "reproduce", "fig3", "--jobs", "2", "--epochs", "50",
                             "--device", "cpu", "--no-progress", "--out", str(tmp_path / "out"), "--cache",
                             str(tmp_path / "cache")], env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    workers: list[int] = []
    trackers: list[int] = []
    try:
        end = time.monotonic() + 300  # generous: imports and data on a busy machine
        while True:
            kids = _children(main.pid)
            workers = [p for p, cmd in kids.items() if "spawn_main" in cmd]
            trackers = [p for p, cmd in kids.items() if "resource_tracker" in cmd]
            if len(workers) == 2 and trackers:
                break
            assert main.poll() is None, "reproduce ended before its workers started"
            assert time.monotonic() < end, f"no two workers and a resource tracker in 300 s: {kids}"
            time.sleep(0.2)
        os.kill(main.pid, sig)
        main.wait(timeout=60)
        end = time.monotonic() + 60
        while left := [p for p in workers + trackers if _alive(p)]:
            assert time.monotonic() < end, f"still running 60 s after the main process ended: {left}"
            time.sleep(0.2)
    finally:
        if main.poll() is None:
            main.kill()
        for p in workers + trackers:  # what this test started, should the test have failed
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_submitits_local_executor_needs_no_slurm_when_asked_for(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    from snncka.launch import SlurmLauncher

    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no sbatch
    SlurmLauncher(tmp_path, cluster="local").check()  # --launcher submitit-local: fine without Slurm
    with pytest.raises(ValueError, match=r"^--launcher slurm: no Slurm here \(sbatch is not on PATH\)"):
        SlurmLauncher(tmp_path).check()


def test_a_requeued_job_seen_failed_in_accounting_is_waited_for_again(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Around a requeue, sacct (filled asynchronously) may show a final state while the controller holds the job
    PENDING again; submitit caches that state for good. ``SlurmLauncher.result`` asks the controller and waits
    again; once the controller has forgotten the job, submitit's error stands."""
    import snncka.launch as launch

    class Watcher:
        cleared = 0

        def clear(self) -> None:
            Watcher.cleared += 1

    class Paths:
        result_pickle = tmp_path / "0_result.pkl"

    class Job:  # the parts of a submitit job that SlurmLauncher.result uses
        job_id, paths, watcher = "7_0", Paths(), Watcher()

        def wait(self) -> None:  # submitit believes the job ended
            pass

        def result(self) -> str:
            if not Paths.result_pickle.exists():
                raise RuntimeError("has not produced any output (state: FAILED)")
            return Paths.result_pickle.read_text()

    states = iter(["PENDING", "RUNNING"])  # the controller, polled while the result is still missing

    def controller(job_id: str) -> str | None:
        assert job_id == "7_0"
        state = next(states, None)
        if state == "RUNNING":
            Paths.result_pickle.write_text("done")  # the second run finishes
        return state

    monkeypatch.setattr(launch, "_controller_state", controller)
    slurm = launch.SlurmLauncher(tmp_path / "slurm")
    assert slurm.result(Job(), poll_s=0) == "done" and Watcher.cleared == 2
    Paths.result_pickle.unlink()
    monkeypatch.setattr(launch, "_controller_state", lambda job_id: None)  # ended for good, without a result
    with pytest.raises(RuntimeError, match="state: FAILED"):
        slurm.result(Job(), poll_s=0)
