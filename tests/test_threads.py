"""The thread policy: a model's thread count is part of its run (launchers agree bit for bit), and snncka's
OpenMP waiting policy reaches the OpenMP runtime when snncka is imported first, unless the user set one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snncka.launch import run_folder
from snncka.training import TrainConfig

TINY = dict(model="resnet8", width=0.5, data="digits", epochs=1, batch_size=64, device="cpu", progress=False)


def _omp_settings(code: str, **env: str) -> dict[str, str]:
    """The OpenMP runtime's own report of its settings (GNU OpenMP's OMP_DISPLAY_ENV) in a fresh process."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    r = subprocess.run([sys.executable, "-c", code], env={**clean, "OMP_DISPLAY_ENV": "verbose", **env},
                       capture_output=True, text=True, timeout=120, check=True)
    out = {}
    for line in r.stderr.splitlines():
        key, eq, value = line.strip().partition(" = ")
        if eq:
            out[key] = value.strip("'")
    if "GOMP_SPINCOUNT" not in out:
        pytest.skip("torch's OpenMP runtime is not GNU OpenMP here")
    return out


def test_importing_snncka_first_makes_idle_openmp_threads_sleep() -> None:
    assert _omp_settings("import snncka, torch; torch.ones(1)")["GOMP_SPINCOUNT"] == "0"  # PASSIVE: no spinning
    # a user's own choice is kept
    assert _omp_settings("import snncka, torch", OMP_WAIT_POLICY="ACTIVE")["OMP_WAIT_POLICY"] == "ACTIVE"
    assert _omp_settings("import snncka, torch", GOMP_SPINCOUNT="1000")["GOMP_SPINCOUNT"] == "1000"


def test_the_thread_count_is_part_of_what_a_run_trains(tmp_path: Path) -> None:
    """Two thread counts are two models (float sums split over threads): two cache entries, never one reused
    for the other."""
    one = TrainConfig(spiking=False, T=1, **TINY)
    two = TrainConfig(spiking=False, T=1, threads=2, **TINY)
    assert run_folder(one, tmp_path) != run_folder(two, tmp_path)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        TrainConfig(threads=0).validate()


@pytest.mark.slow
def test_an_experiment_gives_the_same_bits_inline_and_with_two_jobs(fig3_launchers, same_run) -> None:
    """fig3 (two models, the CKA heatmap and the block curves) inline and with two worker processes: equal
    checkpoints and equal result arrays, bit for bit."""
    same_run(fig3_launchers["jobs2"], fig3_launchers["inline"])
