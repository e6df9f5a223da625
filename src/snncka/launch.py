"""Training an experiment's models as independent jobs: one after another here, in parallel local processes, or
as a Slurm job array through submitit.

Every model lives in the shared model cache under a folder named by its training config's hash
(``<arch>-<ann|snn>-<hash>``), guarded by an OS file lock (``<folder>/.lock``): whichever process holds it trains
or resumes the model; another process that needs the same model waits (and says so) and then reuses the
finished one. A killed job leaves a valid ``last.pt`` behind (written atomically every epoch), and the next
job that needs the model resumes from it, so a preempted or timed-out Slurm job simply runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint
from .files import file_lock, remove_stale_temps
from .training import LOCK_FILE, RESUMABLE_CHANGES, TrainConfig, train

__all__ = ["InlineLauncher", "LocalLauncher", "ModelJob", "SlurmLauncher", "cache_key", "ensure_trained",
           "parse_minutes", "run_folder", "trained_epochs"]


# Bumped whenever a change to the training code changes what one config trains (2: crop padding is black, as the
# released code pads; training threads fixed), so no cache entry made by older code is reused.
TRAINER_REVISION = 2


def cache_key(cfg: TrainConfig) -> str:
    """A short hash of a training config (and the trainer's revision); identical configs share one trained
    model."""
    d = {**asdict(cfg), "trainer_revision": TRAINER_REVISION}
    for k in RESUMABLE_CHANGES:  # where and how a run goes, not what it trains
        d.pop(k, None)
    d["recipe"] = cfg.resolved_recipe.as_dict()  # the recipe's settings, not only its name: a changed recipe retrains
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_folder(cfg: TrainConfig, cache: str | Path) -> Path:
    """The cache folder of the model ``cfg`` trains."""
    return Path(cache) / f"{cfg.model}-{'snn' if cfg.spiking else 'ann'}-{cache_key(cfg)}"


def trained_epochs(run: Path) -> int:
    """Epochs finished in the run folder ``run`` (0 without a ``last.pt``); reads only the checkpoint's metadata."""
    last = Path(run) / "last.pt"
    if not last.is_file():
        return 0
    return int(load_checkpoint(last, mmap=True)["epoch"])


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_trained(cfg: TrainConfig, cache: str | Path) -> Path:
    """Train ``cfg`` into the cache unless it is there; resume it if a previous run was interrupted.

    Holds the cache entry's lock meanwhile: a second process that needs the same model waits for the first
    and then reuses its result. Under torchrun only rank 0 locks (the other ranks follow it into training).
    Returns the run folder (``last.pt`` holds the final weights)."""
    run = run_folder(cfg, cache)
    if int(os.environ.get("RANK", "0")) != 0:
        _train_or_resume(cfg, run)
        return run
    with file_lock(run / LOCK_FILE, on_wait=lambda: _say(
            f"waiting for another process that is training {cfg.model} ({'SNN' if cfg.spiking else 'ANN'}) "
            f"in {run} ...")):
        _train_or_resume(cfg, run)
    return run


def _train_or_resume(cfg: TrainConfig, run: Path) -> None:
    if (run / "last.pt").is_file():
        if trained_epochs(run) >= cfg.epochs:
            return
        remove_stale_temps(run, older_than_s=0)  # we hold the lock: no live writer
        _say(f"resuming {run} from epoch {trained_epochs(run)}")
        train(cfg, run, resume=True)
    else:
        remove_stale_temps(run, older_than_s=0)
        train(cfg, run, force=True)  # files of a run killed in its first epoch are stale


@dataclass
class ModelJob:
    """One model to train into ``cache`` (``hours``: the plan's GPU-hour estimate, used to pick DDP)."""

    label: str
    cfg: TrainConfig
    cache: Path
    hours: float = 0.0

    @property
    def run_dir(self) -> Path:
        return run_folder(self.cfg, self.cache)


class InlineLauncher:
    """Train the models one after another in this process."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def train(self, jobs: Sequence[ModelJob]) -> None:
        from tqdm.auto import tqdm

        for job in tqdm(jobs, desc="models", unit="model", disable=not self.progress or len(jobs) < 2):
            ensure_trained(job.cfg, job.cache)


def _end_with_parent(parent: int) -> None:
    """Make this worker die with the process that started it, even when that one is killed with SIGKILL: the
    kernel's parent-death signal on Linux, and a thread that watches the parent's pid everywhere (it also covers
    the moment before the signal was armed)."""
    import signal
    import threading
    import time

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)  # orphaned: the launcher is gone, nobody waits for this result

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="snncka-parent-watch", daemon=True).start()


def _init_worker(slots: Any, threads: int, use_gpus: bool, parent: int) -> None:
    _end_with_parent(parent)
    slot = slots.get()
    if use_gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot
    import torch

    torch.set_num_threads(threads)


def _train_job(job: ModelJob) -> str:
    return str(ensure_trained(job.cfg, job.cache))


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises SystemExit in the main thread meanwhile, so that the caller can end its workers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class LocalLauncher:
    """Train up to ``jobs`` models at once in separate processes: one per GPU when GPUs exist (each sees only
    its own), else one per CPU slot. A model trains with its config's threads (``TrainConfig.threads``) as it
    would inline, so the bits agree; the rest of a worker's work gets this process's threads split between
    them."""

    def __init__(self, jobs: int, progress: bool = True) -> None:
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {jobs}")
        self.jobs, self.progress = jobs, progress

    def train(self, jobs: Sequence[ModelJob]) -> None:
        import multiprocessing as mp
        from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

        import torch

        todo = [j for j in jobs if trained_epochs(j.run_dir) < j.cfg.epochs]  # no process for a cached model
        use_gpus = any(j.cfg.device != "cpu" for j in todo) and torch.cuda.is_available()
        workers = min(self.jobs, len(todo), torch.cuda.device_count() if use_gpus else self.jobs)
        if workers <= 1:
            return InlineLauncher(self.progress).train(jobs)
        jobs = todo
        threads = max(1, torch.get_num_threads() // workers)
        ctx = mp.get_context("spawn")  # fresh interpreters: CUDA_VISIBLE_DEVICES and threads set before use
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpu_ids = visible.split(",") if visible else [str(i) for i in range(workers)]
        slots = ctx.Queue()
        for i in range(workers):
            slots.put(gpu_ids[i] if use_gpus else str(i))
        _say(f"training {len(jobs)} models, {workers} at a time "
             f"({'one GPU each' if use_gpus else 'each with its TrainConfig.threads CPU threads'})")
        quiet = [replace(j, cfg=replace(j.cfg, progress=False)) for j in jobs]
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(slots, threads, use_gpus, os.getpid()))
        try:
            with _sigterm_exits():
                futures = {pool.submit(_train_job, j): j for j in quiet}
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C, SIGTERM: end the workers now rather than wait for their models
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        with pool:
            for f in pending:
                f.cancel()
            for f in done | pending:
                if not f.cancelled() and f.exception() is not None:
                    raise f.exception()
            for f in done:
                _say(f"trained {futures[f].label}: {f.result()}")


def parse_minutes(text: str | int) -> int:
    """A Slurm time limit in minutes from ``90``, ``"90"``, ``"1:30:00"`` or ``"2-00:00:00"``."""
    s = str(text).strip()
    try:
        days, _, rest = s.rpartition("-") if "-" in s else ("0", "", s)
        parts = [int(p) for p in rest.split(":")]
        if len(parts) == 1:
            minutes = parts[0]
        elif len(parts) in (2, 3):
            h, m = parts[0], parts[1]
            minutes = h * 60 + m + (1 if len(parts) == 3 and parts[2] > 0 else 0)
        else:
            raise ValueError
        minutes += int(days) * 24 * 60
    except ValueError:
        raise ValueError(f"--time {text!r}: give minutes (90) or [D-]H:MM:SS (1:30:00, 2-00:00:00)") from None
    if minutes < 1:
        raise ValueError(f"--time {text!r} must be at least one minute")
    return minutes


class TrainTask:
    """The function a Slurm job runs: ``ensure_trained``; on preemption or timeout submitit calls
    ``checkpoint`` and requeues the same task, which then resumes from ``last.pt``."""

    def __call__(self, cfg: TrainConfig, cache: str, ddp: bool = False) -> str:
        import signal

        # Slurm sends SIGTERM when it requeues, preempts or cancels the job; submitit ignores it (and would go
        # on training until SIGKILL). End at once instead: last.pt holds the last finished epoch, the requeued
        # job resumes from it. Timeouts still reach submitit's own SIGUSR2 handler (checkpoint, requeue).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if ddp:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            os.environ.setdefault("LOCAL_RANK", "0")
        return str(ensure_trained(cfg, cache))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(TrainTask(), *args, **kwargs)


def _on_cpu(jobs: Sequence[ModelJob]) -> bool:
    """Every model trains on the CPU (``--device cpu``): its jobs need no GPU."""
    return bool(jobs) and all(j.cfg.device == "cpu" for j in jobs)


def _require_submitit() -> Any:
    try:
        import submitit
    except ImportError as e:  # a ValueError: the CLI prints it as one line
        raise ValueError("--launcher slurm needs submitit: pip install 'snncka[slurm]'") from e
    return submitit


# Controller states of a job that has not ended for good (a requeued job passes through several of them).
_ALIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                    "RESIZING", "SUSPENDED", "PREEMPTED", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT"})


def _controller_state(job_id: str) -> str | None:
    """The job's state as the Slurm controller holds it now, or None once it has forgotten the job."""
    import subprocess

    try:
        r = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"\bJobState=(\S+)", r.stdout)
    return m.group(1) if r.returncode == 0 and m else None


@dataclass
class SlurmLauncher:
    """Submit every model as a task of a Slurm job array (one GPU each), or, for models whose plan estimate is
    at least ``ddp_min_hours``, as its own ``gpus_per_model``-GPU job running DDP (one task per GPU).

    ``cluster``: ``"slurm"`` (the default) needs a reachable Slurm controller (``check`` says why not, in one
    line); ``"local"`` runs the jobs as local processes through submitit's local executor (tests, trials).
    Models that train on the CPU (``device="cpu"``) ask for no GPU. ``folder`` holds submitit's scripts and
    logs."""

    folder: Path
    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_model: int = 1
    ddp_min_hours: float = float("inf")
    cpus_per_task: int = 8
    max_parallel: int | None = None
    cluster: str = "slurm"
    extra: dict[str, Any] = field(default_factory=dict)  # more slurm_* parameters for submitit

    def check(self) -> None:
        """Raise a one-line ValueError unless submitit is installed and (for ``cluster="slurm"``) a Slurm
        controller answers here: without one, submitit would quietly run every job locally at once."""
        _require_submitit()
        if self.cluster != "slurm":
            return
        import shutil
        import subprocess

        hint = "; start one (tools/slurm-local start) or use --launcher submitit-local to run the jobs here"
        if shutil.which("sbatch") is None:
            raise ValueError("--launcher slurm: no Slurm here (sbatch is not on PATH)" + hint)
        try:
            ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ValueError(f"--launcher slurm: scontrol ping failed ({e})" + hint) from None
        if ping.returncode != 0 or "UP" not in ping.stdout:
            said = " ".join((ping.stdout + ping.stderr).split()) or f"exit status {ping.returncode}"
            raise ValueError(f"--launcher slurm: the Slurm controller does not answer ({said})" + hint)

    def executor(self, gpus: int, tasks: int = 1, name: str = "snncka-train", **more: Any) -> Any:
        submitit = _require_submitit()
        ex = submitit.AutoExecutor(folder=str(self.folder), cluster=self.cluster)
        params: dict[str, Any] = dict(timeout_min=self.time_min, gpus_per_node=gpus, tasks_per_node=tasks,
                                      cpus_per_task=self.cpus_per_task, nodes=1, name=name, **self.extra)
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.max_parallel:
            params["slurm_array_parallelism"] = self.max_parallel
        params.update(more)
        ex.update_parameters(**params)
        return ex

    def submit(self, jobs: Sequence[ModelJob]) -> list[Any]:
        """Submit the models' training; returns submitit's jobs (``job.result()`` waits for one)."""
        self.check()
        big = [j for j in jobs if self.gpus_per_model > 1 and j.hours >= self.ddp_min_hours]
        small = [j for j in jobs if j not in big]
        submitted: list[Any] = []
        if small:
            ex = self.executor(gpus=0 if _on_cpu(small) else min(self.gpus_per_model, 1))
            submitted += ex.map_array(TrainTask(), [j.cfg for j in small], [str(j.cache) for j in small])
        for j in big:
            ex = self.executor(gpus=self.gpus_per_model, tasks=self.gpus_per_model, name=f"snncka-{j.label}")
            submitted.append(ex.submit(TrainTask(), j.cfg, str(j.cache), True))
        for j, s in zip(small + big, submitted, strict=True):
            _say(f"submitted {j.label}: job {s.job_id}")
        return submitted

    def result(self, job: Any, poll_s: float = 2.0) -> Any:
        """``job.result()``, but a requeued job (preempted, or ``scontrol requeue``) is waited for again.

        Why: submitit reads job states from ``sacct``, which the accounting daemon fills asynchronously, and keeps
        the first final state it sees for good. Around a requeue that can be a stale FAILED while the controller
        already holds the job PENDING again, and ``job.result()`` would then raise for a job that will succeed.
        A final state without a result is believed only when the controller (``scontrol``) agrees."""
        while True:
            job.wait()
            if self.cluster != "slurm" or Path(job.paths.result_pickle).exists():
                return job.result()
            if _controller_state(str(job.job_id)) not in _ALIVE:
                return job.result()  # really ended without a result: raises with the job's log
            job.watcher.clear()  # forget the stale final state
            time.sleep(poll_s)

    def train(self, jobs: Sequence[ModelJob]) -> None:
        """Submit and wait until every model is trained (raises with the job's log on a failure)."""
        for job in self.submit(jobs):
            self.result(job)

    def submit_experiment(self, jobs: Sequence[ModelJob], analyse: Any, *args: Any) -> tuple[list[Any], Any]:
        """Submit the training jobs and ``analyse(*args)`` as a job that starts once they all succeeded (a
        Slurm ``afterok`` dependency; other clusters: after waiting for them here)."""
        trained = self.submit(jobs)
        more: dict[str, Any] = {}
        if trained and self.cluster == "slurm":
            ids = sorted({str(j.job_id).split("_")[0] for j in trained})
            more["slurm_additional_parameters"] = {**self.extra.get("slurm_additional_parameters", {}),
                                                   "dependency": "afterok:" + ":".join(ids)}
        else:
            for job in trained:
                self.result(job)
        ex = self.executor(gpus=0 if _on_cpu(jobs) else min(self.gpus_per_model, 1), name="snncka-analyse",
                           **more)
        return trained, ex.submit(analyse, *args)
