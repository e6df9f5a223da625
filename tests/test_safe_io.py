"""Loaders that refuse politely, one writer at a time, nothing left behind (safe reading and writing)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from snncka import readers
from snncka.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from snncka.cli import main
from snncka.files import atomic_link_or_copy, atomic_write_text
from snncka.readers import BadFileError, read_json, read_npz, verify_zip
from snncka.results import CKAResult, load_result


def _one_line(text: str) -> str:
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text


def _good(folder: Path, name: str = "good") -> Path:
    res = CKAResult(matrix=np.array([[1.0, 0.5], [0.25, 0.75]]), layers_a=["conv1", "fc"], layers_b=["conv1", "fc"],
                    kinds_a=["conv", "fc"], kinds_b=["conv", "fc"], n_images=64, batch_size=32,
                    estimator="unbiased", kernel="linear", ci_low=np.zeros((2, 2)), ci_high=np.ones((2, 2)))
    return res.save(folder, name)


def _flip_inside(path: Path, needle: bytes) -> None:
    """Change one byte of ``needle`` (some stored data) inside the zip file ``path``."""
    raw = bytearray(path.read_bytes())
    i = raw.index(needle) + len(needle) // 2
    raw[i] ^= 0x01
    path.write_bytes(bytes(raw))


def _huge_npz(path: Path) -> None:
    """An .npz whose array header declares 1 TiB of float64 but holds 16 bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (2**37,)})
    buf.write(b"\0" * 16)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("matrix.npy", buf.getvalue())


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each bad-file case beside nothing else: name -> (file to load, what its one line must say)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[Path, str]] = {}
    deep = folder / "deep.json"
    deep.write_text('{"snncka_result": "cka", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    cases["deep"] = (deep, "nests 100001 levels deep")
    js = _good(folder, "truncated")
    npz = js.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:-40])
    cases["truncated"] = (js, "not a readable zip file")
    js = _good(folder, "crc")
    _flip_inside(js.with_suffix(".npz"), np.array([0.25, 0.75]).tobytes())
    cases["crc"] = (js, "CRC")
    js = _good(folder, "huge")
    _huge_npz(js.with_suffix(".npz"))
    cases["huge"] = (js, "declares array 'matrix' of shape (137438953472,)")
    js = _good(folder, "shape")
    with np.load(js.with_suffix(".npz")) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(js.with_suffix(".npz"), **{**arrays, "matrix": np.zeros((2, 3))})
    cases["shape"] = (js, "matrix has shape (2, 3), but there are 2 x 2 layers")
    js = _good(folder, "type")
    meta = json.loads(js.read_text())
    js.write_text(json.dumps({**meta, "n_images": "many"}))
    cases["type"] = (js, f"{str(js)!r}: field 'n_images' of the 'cka' result should be int, got str \"many\"")
    return cases


@pytest.mark.parametrize("case", ["deep", "truncated", "crc", "huge", "shape", "type"])
def test_a_bad_result_file_is_refused_with_one_line(tmp_path: Path, case: str) -> None:
    path, message = _bad_files(tmp_path)[case]
    with pytest.raises(ValueError) as e:
        load_result(path)
    assert message in _one_line(str(e.value))
    assert path.stem in str(e.value)  # names the file


def test_report_skips_each_bad_file_with_one_warning_and_still_writes(tmp_path: Path) -> None:
    cases = _bad_files(tmp_path)
    _good(tmp_path)
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.output.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == len(cases), res.output
    for path, message in cases.values():
        assert sum(path.name in w and message in w for w in warnings) == 1, (path, res.output)
    assert "Traceback" not in res.output
    html = (tmp_path / "report.html").read_text()
    files = html.split("id='files'")[1].split("</table>")[0]
    assert "good.json" in files and "crc.json" not in files  # the bad ones are listed as skipped only


def test_read_json_counts_depth_outside_strings_only(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"s": "[[[[[[" * 100, "x": [[1, {"y": [2]}]]}))
    assert read_json(p)["x"] == [[1, {"y": [2]}]]
    assert readers.json_depth(p.read_bytes()) == 5


def test_npz_declaring_more_than_memory_is_refused_before_allocating(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "x.npz"
    np.savez(p, a=np.arange(1000.0))
    assert np.array_equal(read_npz(p)["a"], np.arange(1000.0))
    monkeypatch.setattr(readers, "memory_available", lambda: 4000)
    with pytest.raises(BadFileError, match=r"declares contents of .* GiB, more than the .* GiB of memory"):
        read_npz(p)


def test_metrics_line_nested_deep_is_a_corrupt_line_not_a_recursion_error(tmp_path: Path) -> None:
    from snncka.training import read_metrics

    p = tmp_path / "metrics.jsonl"
    p.write_text('{"epoch": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n" + '{"epoch": 2}\n')
    with pytest.raises(ValueError, match="line 2: not a metrics record"):
        read_metrics(p)


def _checkpoint(path: Path) -> Path:
    from snncka.models import create

    model = create("resnet8", num_classes=10, width=0.25, spiking=False)
    save_checkpoint({"model_config": model.config, "model": model.state_dict()}, path)
    return path


def test_a_checkpoint_with_one_byte_flipped_is_refused(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "last.pt")
    assert load_checkpoint(ckpt)["format"] == "snncka-checkpoint"
    weight = torch.load(ckpt, weights_only=True)["model"]
    w = next(v for k, v in weight.items() if v.numel() > 100)
    _flip_inside(ckpt, w.numpy().tobytes()[:64])
    with pytest.raises(CheckpointError, match="its member 'archive/data/0' fails its CRC-32 check"):
        load_checkpoint(ckpt)  # the member's name is torch's own, not the save-time temporary file's
    res = CliRunner().invoke(main, ["eval", str(ckpt), "--data", "digits"])
    assert res.exit_code != 0
    assert _one_line(res.output).startswith("Error: cannot use checkpoint: ") and "CRC-32" in res.output


def test_verify_zip_refuses_a_member_that_would_inflate_beyond_memory(tmp_path: Path, monkeypatch) -> None:
    ckpt = _checkpoint(tmp_path / "last.pt")
    verify_zip(ckpt)
    monkeypatch.setattr(readers, "memory_available", lambda: 1000)
    with pytest.raises(BadFileError, match="more than the"):
        verify_zip(ckpt)


def test_linking_a_file_onto_itself_leaves_no_temp_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.pt", tmp_path / "b.pt"
    atomic_write_text(src, "x")
    for _ in range(3):
        atomic_link_or_copy(src, dst)
    os.link(src, tmp_path / "c.pt")
    atomic_link_or_copy(src, tmp_path / "c.pt")
    assert dst.read_text() == "x" and os.path.samefile(src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt", "c.pt"]


def _bomb(root: Path, member: str, size: int) -> Path:
    """A .tar.gz of a few hundred bytes whose member ``member`` declares ``size`` bytes (a header is all it
    takes: tar readers trust it), followed by a little of that data."""
    import gzip
    import tarfile

    info = tarfile.TarInfo(member)
    info.size = size
    arc = root / "cifar-10-python.tar.gz"
    with gzip.open(arc, "wb") as z:
        z.write(info.tobuf(format=tarfile.GNU_FORMAT))
        z.write(b"\0" * 65536)
    return arc


@pytest.mark.parametrize("member", ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/readme.html"])
def test_a_cifar_archive_bomb_is_refused_before_it_is_inflated(tmp_path: Path, member: str) -> None:
    import subprocess
    import sys

    arc = _bomb(tmp_path, member, 2 * 2**30)
    assert arc.stat().st_size < 4096
    code = ("import resource, snncka.data as D\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n"
            f"    D.get('cifar10', root={str(tmp_path)!r})\n"
            "except ValueError as e:\n"
            "    print(e)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    def limit_memory() -> None:  # as a 1.5 GiB memory limit would: a bomb inflated in memory dies here
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**29, 3 * 2**29))

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         preexec_fn=limit_memory).stdout
    message, grown_mib = out.strip().splitlines()
    assert f"member {member} declares 2048 MiB, more than a CIFAR archive's file can be" in message
    assert "cifar-10-python.tar.gz is corrupt or incomplete" in message
    assert int(grown_mib) < 64  # nothing was inflated into memory


def test_an_oversized_extracted_cifar_batch_is_refused(tmp_path: Path) -> None:
    from snncka import data as D

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in D.CIFAR["cifar10"].train + D.CIFAR["cifar10"].test:
        with open(folder / f, "wb") as fh:
            fh.truncate(40 * 2**20 if f == "data_batch_1" else 10)  # sparse: no disk used
    with pytest.raises(ValueError, match=r"data_batch_1 is 40 MiB, more than a CIFAR batch file can be \(33 MiB\)"):
        D.get("cifar10", root=tmp_path)


# ---------------------------------------------------------------------------------------------------------
# One writer at a time
# ---------------------------------------------------------------------------------------------------------

TINY = ["--model", "resnet8", "--width", "0.25", "--batch-size", "256", "--no-progress", "--ann"]


def _snncka(*args: str):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "snncka.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _epochs(run: Path) -> list[int]:
    from snncka.training import read_metrics

    return [m["epoch"] for m in read_metrics(run / "metrics.jsonl")]


def _holder(lock: Path):
    """Another process that holds ``lock`` (as a training run does) until its stdin closes."""
    import subprocess
    import sys

    code = ("import sys; from snncka.files import file_lock\n"
            f"with file_lock({str(lock)!r}):\n    print('held', flush=True); sys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


_TINY_CFG = dict(model="resnet8", width=0.25, batch_size=256, progress=False, spiking=False)


def _interrupted(run: Path, epochs: int = 3) -> None:
    """A run of ``epochs`` epochs killed after its first (as ``kill -9`` would leave it: resumable)."""
    from snncka.training import TrainConfig, train

    def stop(epoch: int, metrics: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**_TINY_CFG, epochs=epochs), run, on_epoch_end=stop)
    assert _epochs(run) == [1]


def test_a_second_writer_stops_at_once_saying_who_holds_the_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _interrupted(run, epochs=2)
    before = (run / "metrics.jsonl").read_text()
    holder = _holder(run / ".lock")
    try:
        for args in (["--resume"], [*TINY, "--force", "--epochs", "1"]):
            res = CliRunner().invoke(main, ["train", "--no-progress", *args, "--out", str(run)])
            assert res.exit_code == 1
            assert _one_line(res.output).startswith(f"Error: run folder {str(run)!r} is being written by another "
                                                    f"process (pid {holder.pid} on ")
            assert "pass --resume to continue the run, or choose another --out" in res.output
        assert (run / "metrics.jsonl").read_text() == before
    finally:
        holder.communicate("")
    res = CliRunner().invoke(main, ["train", "--no-progress", "--resume", "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert _epochs(run) == [1, 2]


def test_two_simultaneous_trainings_into_one_folder_never_interleave(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    procs = [_snncka("train", *TINY, "--epochs", "2", "--out", run) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 1], outs
    loser = outs[[p.returncode for p in procs].index(1)]
    assert "is being written by another process (pid" in loser or "already holds" in loser, loser
    assert _epochs(tmp_path / "run") == [1, 2]


def test_two_simultaneous_resumes_never_interleave(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _interrupted(run)
    procs = [_snncka("train", "--no-progress", "--resume", "--out", str(run)) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert 0 in [p.returncode for p in procs], outs
    assert all(p.returncode == 0 or "is being written by another process" in o
               for p, o in zip(procs, outs, strict=True)), outs
    assert _epochs(run) == [1, 2, 3]


def test_reproduce_and_train_resume_on_one_cache_entry_never_interleave(tmp_path: Path) -> None:
    import subprocess
    import sys

    from snncka.launch import run_folder
    from snncka.training import TrainConfig

    run = run_folder(TrainConfig(**_TINY_CFG, epochs=3), tmp_path / "cache")
    _interrupted(run)
    code = ("import sys; from snncka.launch import ensure_trained; from snncka.training import TrainConfig; "
            f"ensure_trained(TrainConfig(**{_TINY_CFG!r}, epochs=3), sys.argv[1])")
    runner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cache")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    trainer = _snncka("train", "--no-progress", "--resume", "--out", str(run))
    outs = [p.communicate(timeout=600)[0] for p in (runner, trainer)]
    assert runner.returncode == 0, outs[0]
    assert trainer.returncode == 0 or "is being written by another process" in outs[1], outs[1]
    assert _epochs(run) == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------------
# Read-only output folders, temp files
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """An existing folder nobody can write into. As root a permission bit stops nothing, so there it is a
    read-only bind mount (skipped where mounting is not permitted); otherwise mode 0555."""
    import subprocess

    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True).returncode == 0
    if not mounted or subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
        pytest.skip("as root only a read-only mount makes a folder read-only, and mounting is not permitted here")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.parametrize("command", [["reproduce", "fig3", "--epochs", "1"], ["train", *TINY, "--epochs", "1"]])
def test_a_read_only_out_fails_before_any_training(tmp_path: Path, read_only_folder: Path, command: list[str]) -> None:
    cache = tmp_path / "cache"
    extra = ["--cache", str(cache), "--no-progress"] if command[0] == "reproduce" else []
    res = CliRunner().invoke(main, [*command, *extra, "--out", str(read_only_folder)])
    assert res.exit_code == 1
    what = "output folder" if command[0] == "reproduce" else "run folder"
    assert _one_line(res.output).startswith(f"Error: cannot write into the {what} {str(read_only_folder)!r} (")
    assert not cache.exists() and not list(read_only_folder.iterdir())  # nothing trained, nothing written


def test_rerunning_an_experiment_into_one_folder_leaves_no_temp_files(tmp_path: Path) -> None:
    from snncka.runner import run

    out = tmp_path / "out"
    for _ in range(3):
        run("fig3", "smoke", out, cache=tmp_path / "cache", epochs=1, cka_images=32, progress=False, device="cpu")
    left = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert left == []
    assert sorted(p.name for p in (out / "models").rglob("*.pt"))  # the checkpoints are there


def test_a_released_state_dict_with_non_tensors_is_one_line() -> None:
    from snncka.models import create, load_released_state_dict

    model = create("resnet8", num_classes=10, width=0.25, spiking=False)
    sd = dict(model.state_dict())
    sd[next(iter(sd))] = [1.0, 2.0]
    with pytest.raises(ValueError, match=r"^the released state dict holds non-tensor values at \S+; pass the "):
        load_released_state_dict(model, sd)
    with pytest.raises(ValueError, match="^a released state dict must be a mapping of names to tensors, got str"):
        load_released_state_dict(model, "weights.pt")


def test_a_read_only_cache_fails_before_any_training(tmp_path: Path, read_only_folder: Path) -> None:
    res = CliRunner().invoke(main, ["reproduce", "fig3", "--epochs", "1", "--no-progress", "--cache",
                                    str(read_only_folder), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    line = _one_line(res.output).strip()
    assert line.startswith(f"Error: cannot write into the model cache {str(read_only_folder)!r} (")
    assert line.endswith("make it writable or choose another --cache")
    assert not list(read_only_folder.iterdir())


def test_report_into_a_read_only_folder_names_the_folder_once(tmp_path: Path, read_only_folder: Path) -> None:
    _good(tmp_path / "run")
    res = CliRunner().invoke(main, ["report", str(tmp_path / "run"), "--out", str(read_only_folder / "r.html")])
    assert res.exit_code == 1
    assert _one_line(res.output).startswith(f"Error: cannot write into the folder of --out {str(read_only_folder)!r}")


def test_reproduce_says_a_clipped_image_count_as_one_warning_line(tmp_path: Path, small_digits: Path) -> None:
    args = ["reproduce", "fig3", "--epochs", "1", "--no-progress", "--cache", str(small_digits)]
    res = CliRunner().invoke(main, [*args, "--cka-images", "100000", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    said = [line for line in res.stderr.splitlines() if "100000" in line]
    assert said == ["Warning: --cka-images 100000 is more than the 180 test images of 'digits': using all 180"], \
        res.stderr
    assert "UserWarning" not in res.stderr


@pytest.mark.parametrize("command", ["blocks", "compare", "eval", "probe", "rates", "robustness", "seeds", "self",
                                     "temporal"])
def test_every_command_refuses_a_truncated_checkpoint_in_one_line(tmp_path: Path, command: str) -> None:
    good = _checkpoint(tmp_path / "good.pt").read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good[: len(good) // 2])
    args = [command, str(bad)]
    if command in ("probe", "robustness", "seeds"):
        args.append(str(bad))  # the commands of several checkpoints: the same bad file twice
    if command != "eval":
        args += ["--out", str(tmp_path / "out")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0
    assert _one_line(res.output).startswith("Error: ") and "truncated or corrupt" in res.output, res.output
    assert str(bad) in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written
