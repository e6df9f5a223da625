"""A rerun into the same folder never shows results of other settings: each saved result records what it was
computed from (checkpoint contents, analysis settings, the results it derives from) and is reused only while
that is unchanged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

import snncka.paper  # noqa: F401  (registers the paper's experiments: fig3)
from snncka.analyses import BlocksResult, CompareAnalysis, load_result
from snncka.fingerprint import file_sha256, fingerprint
from snncka.results import saved_inputs
from snncka.runner import run_one


def _fig3(out: Path, cache: Path, epochs: int, cka_images: int) -> None:
    run_one("fig3", "smoke", out, cache=cache, epochs=epochs, cka_images=cka_images, progress=False, judge=False)


def _stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((out / "results").glob("*.json"))}


def test_rerun_with_other_settings_recomputes_and_equal_settings_reuse(tmp_path: Path, small_digits: Path) -> None:
    out, cache = tmp_path / "out", small_digits  # the session's models on small data (fig3's pair trained once)
    _fig3(out, cache, epochs=1, cka_images=32)
    first = load_result(out / "results" / "compare-resnet20-for-resnet110.json")
    assert isinstance(first, CompareAnalysis) and first.cka.n_images == 32
    stamps = _stamps(out)
    assert {"compare-resnet20-for-resnet110.json", "blocks-resnet20-for-resnet110.json"} <= set(stamps)

    _fig3(out, cache, epochs=1, cka_images=32)  # the same settings: every result reused, none rewritten
    assert _stamps(out) == stamps

    _fig3(out, cache, epochs=1, cka_images=64)  # other CKA images: recomputed, and the blocks derived from it
    res = load_result(out / "results" / "compare-resnet20-for-resnet110.json")
    assert isinstance(res, CompareAnalysis) and res.cka.n_images == 64
    after = _stamps(out)
    assert after["compare-resnet20-for-resnet110.json"] != stamps["compare-resnet20-for-resnet110.json"]
    assert after["blocks-resnet20-for-resnet110.json"] != stamps["blocks-resnet20-for-resnet110.json"]

    _fig3(out, cache, epochs=2, cka_images=64)  # other checkpoints (more epochs): recomputed from them
    second = load_result(out / "results" / "compare-resnet20-for-resnet110.json")
    assert isinstance(second, CompareAnalysis) and second.cka.n_images == 64
    assert not np.allclose(second.matrix, res.matrix, equal_nan=True)

    fresh_out = tmp_path / "fresh"
    _fig3(fresh_out, cache, epochs=2, cka_images=64)  # a fresh folder gives the same numbers
    fresh = load_result(fresh_out / "results" / "compare-resnet20-for-resnet110.json")
    assert isinstance(fresh, CompareAnalysis)
    np.testing.assert_array_equal(second.matrix, fresh.matrix)
    blocks, fresh_blocks = (load_result(o / "results" / "blocks-resnet20-for-resnet110.json") for o in (out, fresh_out))
    assert isinstance(blocks, BlocksResult) and isinstance(fresh_blocks, BlocksResult)
    assert saved_inputs(out / "results" / "blocks-resnet20-for-resnet110.json") == saved_inputs(
        fresh_out / "results" / "blocks-resnet20-for-resnet110.json")


def test_file_hash_is_the_content_sha256_and_follows_changes(tmp_path: Path) -> None:
    f = tmp_path / "w.pt"
    f.write_bytes(b"abc")
    assert file_sha256(f) == hashlib.sha256(b"abc").hexdigest()
    os.utime(f, ns=(1, 1))
    f.write_bytes(b"abd")
    assert file_sha256(f) == hashlib.sha256(b"abd").hexdigest()


def test_fingerprint_sees_file_content_not_name_and_every_setting(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    assert fingerprint([a, {"n_images": 32}]) == fingerprint([b, {"n_images": 32}])
    assert fingerprint([a, {"n_images": 32}]) != fingerprint([a, {"n_images": 64}])
    assert fingerprint({"eps": [0.1, 0.2]}) != fingerprint({"eps": [0.1, 0.25]})
    assert fingerprint(np.zeros(3, np.float32)) != fingerprint(np.zeros(3, np.float64))


def test_a_result_saved_without_inputs_is_not_trusted(tmp_path: Path) -> None:
    from snncka.analyses import TableResult

    res = TableResult(analysis_name="x", model="m", values={"a": 1.0}, settings={})
    res.save(tmp_path, "old")
    assert saved_inputs(tmp_path / "old.json") is None
    res.save(tmp_path, "new", inputs="f" * 64)
    assert saved_inputs(tmp_path / "new.json") == "f" * 64
    assert load_result(tmp_path / "new.json") == res  # the extra head key does not change what loads


def test_runner_reuses_only_equal_inputs_and_invalidates_derived_results(tmp_path: Path) -> None:
    from snncka.analyses import TableResult
    from snncka.runner import Run, RunOptions

    calls: list[str] = []

    def measure(ckpt: Path, *, n_images: int, progress: bool = False) -> TableResult:
        calls.append("measure")
        return TableResult(analysis_name="m", model="x", values={"bytes": len(ckpt.read_bytes()), "n": n_images},
                           settings={})

    def derive(src: TableResult) -> TableResult:
        calls.append("derive")
        return TableResult(analysis_name="d", model="x", values={"twice": 2 * src.values["n"]}, settings={})

    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"one")

    def rerun(n: int) -> TableResult:
        ctx = Run(exp=None, options=RunOptions(), specs=[], runs={}, out=tmp_path / "out")  # type: ignore[arg-type]
        src = ctx.cached("m", measure, ckpt, n_images=n, progress=True)
        return ctx.cached("d", derive, src)

    assert rerun(32).values == {"twice": 64} and calls == ["measure", "derive"]
    assert rerun(32).values == {"twice": 64} and calls == ["measure", "derive"]  # reused, nothing computed
    assert rerun(64).values == {"twice": 128} and calls[2:] == ["measure", "derive"]  # a setting changed
    ckpt.write_bytes(b"three")  # the checkpoint changed (same setting): both again, the derived one too
    assert rerun(64).values == {"twice": 128} and calls[4:] == ["measure", "derive"]
    assert load_result(tmp_path / "out" / "results" / "m.json").values["bytes"] == 5  # type: ignore[attr-defined]
    ckpt2 = tmp_path / "copy.pt"
    ckpt2.write_bytes(b"three")  # another path with the same content is the same input
    ctx = Run(exp=None, options=RunOptions(), specs=[], runs={}, out=tmp_path / "out")  # type: ignore[arg-type]
    ctx.cached("m", measure, ckpt2, n_images=64)
    assert len(calls) == 6
