"""DVS pixel simulator, events -> frames integration, area resize and the recording readers, against naive
scalar re-implementations, tonic (the library these replace on the hot path) and two real recordings."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from snncka.events import (
    EVENT_DTYPE,
    PixelModel,
    Saccades,
    area_bounds,
    event_counts,
    event_frames,
    events_to_frames,
    read_aedat4,
    read_nmnist_bin,
    resize_frames,
    simulate_saccades,
)

SAMPLES = next((d / "shared" / "data" / "event-samples" for d in Path(__file__).resolve().parents
                if (d / "shared" / "data" / "event-samples").is_dir()), None)


def _sample(name: str) -> Path:
    """A real recording from the shared test data (``shared/data/event-samples`` beside the repository)."""
    if SAMPLES is None or not (SAMPLES / name).is_file():
        pytest.skip(f"real recording {name} not found in a shared/data/event-samples folder above the tests")
    return SAMPLES / name


def _digit_images(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    img = torch.from_numpy(load_digits().images[:n] / 16.0).float()[:, None]
    return torch.nn.functional.interpolate(img, scale_factor=2, mode="bilinear")[:, 0].clamp(0, 1).numpy()


def test_tonic_dtype_is_ours():
    pytest.importorskip("tonic", reason="tonic (the snncka[events] extra) is not installed")
    from tonic.io import events_struct

    assert EVENT_DTYPE == events_struct


def test_simulation_deterministic_for_a_seed():
    imgs = _digit_images(6)
    a = simulate_saccades(imgs, (20, 20), seed=3)
    b = simulate_saccades(imgs, (20, 20), seed=3)
    c = simulate_saccades(imgs, (20, 20), seed=4)
    assert len(a) == 6
    for ra, rb in zip(a, b, strict=True):
        assert ra.dtype == EVENT_DTYPE
        np.testing.assert_array_equal(ra, rb)
    assert any(len(ra) != len(rc) or not np.array_equal(ra, rc) for ra, rc in zip(a, c, strict=True))
    sacc = Saccades()
    for r in a:
        assert 1000 < len(r) < 10000  # a digit's edges crossing ~12 thresholds per saccade
        assert np.all(np.diff(r["t"]) >= 0) and r["t"].min() >= 0 and r["t"].max() <= sacc.duration_us
        assert r["x"].min() >= 0 and r["x"].max() < 20 and r["y"].min() >= 0 and r["y"].max() < 20
        assert 0.35 < r["p"].mean() < 0.65  # a closed path: as many ON as OFF edges
        # the three saccades all produce events
        assert all(((r["t"] > k * sacc.saccade_us) & (r["t"] <= (k + 1) * sacc.saccade_us)).sum() > 100
                   for k in range(3))


def _naive_pixel(intensity, th_on, th_off, floor, refractory, dt, steps):
    """Scalar DVS pixel: reference reset on events, held in reset while refractory. -> [(step, on)]."""
    ref = math.log(intensity(0) + floor)
    unblock, out = 0, []
    for k in range(1, steps + 1):
        t = k * dt
        L = math.log(intensity(t) + floor)
        if t < unblock:
            ref = L
            continue
        if L - ref > th_on:
            out.append((k, True))
        elif L - ref < -th_off:
            out.append((k, False))
        else:
            continue
        ref, unblock = L, t + refractory
    return out


@pytest.mark.parametrize("refractory", [0, 3000])
def test_pixel_model_matches_scalar_reference(refractory):
    # a single bright pixel slides one pixel right and back on a 2x1 sensor: pixel 0 dims then brightens
    sacc = Saccades(vertices=((0.0, 0.0), (1.0, 0.0)), saccade_us=20_000, dt_us=1000)
    pix = PixelModel(threshold=0.2, threshold_sigma=0.0, refractory_us=refractory, shot_noise_hz=0.0)
    (ev,) = simulate_saccades(np.ones((1, 1, 1)), (2, 1), seed=0, pixel=pix, saccades=sacc)

    def ox(t):
        return sacc.position(t)[0]

    for x, inten in ((0, lambda t: 1 - ox(t)), (1, ox)):
        want = _naive_pixel(inten, 0.2, 0.2, pix.log_floor, refractory, sacc.dt_us, 40)
        got = ev[ev["x"] == x]
        steps = np.ceil(got["t"] / sacc.dt_us).astype(int)  # t = step time - jitter in [0, dt)
        assert list(zip(steps.tolist(), got["p"].tolist(), strict=True)) == want
        assert len(want) >= (3 if refractory else 6)
    assert np.all(ev["y"] == 0)


def test_threshold_mismatch_and_noise():
    flat = np.zeros((3, 4, 4))  # black images: only shot noise fires
    pix = PixelModel(shot_noise_hz=200.0)
    recs = simulate_saccades(flat, (8, 8), seed=1, pixel=pix)
    n = sum(len(r) for r in recs)
    expected = 200.0 * 0.3 * 64 * 3  # rate x duration x pixels x recordings
    assert abs(n - expected) < 5 * math.sqrt(expected)
    with pytest.raises(ValueError, match="intensities must lie in"):
        simulate_saccades(flat + 2, (8, 8), seed=0)
    with pytest.raises(ValueError, match="leaves a"):
        simulate_saccades(np.zeros((1, 8, 8)), (8, 8), seed=0)


def _naive_frames(ev, w, h, T):
    frames = np.zeros((T, 2, h, w))
    t0 = int(ev["t"].min())
    window = (int(ev["t"].max()) - t0) // T + 1
    for e in ev:
        frames[(int(e["t"]) - t0) // window, int(e["p"]), int(e["y"]), int(e["x"])] += 1
    return frames


def test_events_to_frames_hand_computed():
    ev = np.zeros(5, EVENT_DTYPE)
    ev["t"] = [100, 105, 109, 110, 110]  # span 10, T=2 -> windows [100, 106) and [106, 112)
    ev["x"] = [0, 1, 1, 2, 2]
    ev["y"] = [0, 0, 1, 1, 1]
    ev["p"] = [True, False, True, True, True]
    f = events_to_frames(ev, (3, 2, 2), 2)
    want = np.zeros((2, 2, 2, 3), np.float32)
    want[0, 1, 0, 0] = 1
    want[0, 0, 0, 1] = 1
    want[1, 1, 1, 1] = 1
    want[1, 1, 1, 2] = 2
    np.testing.assert_array_equal(f, want)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(events_to_frames(ev[::-1].copy(), (3, 2, 2), 2), want)  # unsorted input
    np.testing.assert_array_equal(events_to_frames(ev[:0], (3, 2, 2), 4), np.zeros((4, 2, 2, 3)))
    with pytest.raises(ValueError, match="outside the 2x2 sensor"):
        events_to_frames(ev, (2, 2, 2), 2)


@pytest.mark.parametrize("T", [1, 3, 10])
def test_events_to_frames_random_matches_naive_and_keeps_every_event(T):
    rng = np.random.default_rng(T)
    ev = np.zeros(3000, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(5_000, 1_300_000, ev.size))
    ev["x"], ev["y"] = rng.integers(0, 13, ev.size), rng.integers(0, 7, ev.size)
    ev["p"] = rng.random(ev.size) < 0.5
    f = events_to_frames(ev, (13, 7, 2), T)
    np.testing.assert_array_equal(f, _naive_frames(ev, 13, 7, T))
    assert f.sum() == ev.size


def test_hot_pixel_beyond_int16():
    ev = np.zeros(40_000, EVENT_DTYPE)
    ev["t"] = np.arange(ev.size)
    ev["p"] = True
    f = events_to_frames(ev, (2, 2, 2), 1)
    assert f[0, 1, 0, 0] == 40_000 and f.sum() == 40_000


def _old_resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The resize this module used before (kept here as the reference): dense area matrices, one stacked
    float64 matmul on each side."""
    def matrix(n_in: int, n_out: int) -> np.ndarray:
        m = np.zeros((n_out, n_in))
        for i in range(n_out):
            a, b = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
            m[i, a:b] = 1.0 / (b - a)
        return m

    h, w = frames.shape[-2:]
    return (matrix(h, size[0]) @ frames.astype(np.float64) @ matrix(w, size[1]).T).astype(np.float32)


@pytest.mark.parametrize(("hw", "out"), [((128, 128), (48, 48)), ((180, 240), (48, 48)), ((20, 20), (7, 9)),
                                         ((96, 64), (48, 32)), ((5, 7), (9, 11))])
def test_area_resize_matches_torch_and_the_old_matmul(hw, out):
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, *hw)).astype(np.float32)
    counts = rng.poisson(2.0, (3, 2, *hw))  # event counts (int64), as the datasets resize them
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=out, mode="area").numpy()
    np.testing.assert_allclose(resize_frames(x, out), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resize_frames(x, out), _old_resize(x, out), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(resize_frames(counts, out), _old_resize(counts, out), rtol=1e-6, atol=0)
    assert resize_frames(counts, out).dtype == np.float32
    a, b = area_bounds(hw[0], out[0])
    assert a[0] == 0 and b[-1] == hw[0] and np.all(b > a) and np.all(a[1:] >= a[:-1])
    assert resize_frames(x, hw) is x  # same size: unchanged


def test_area_resize_hand_computed():
    x = np.arange(12, dtype=np.int64).reshape(1, 3, 4)  # 3 -> 2 rows: {0, 1}, {1, 2}; 4 -> 2 cols: pairs
    want = np.array([[[(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4],
                      [(4 + 5 + 8 + 9) / 4, (6 + 7 + 10 + 11) / 4]]])
    np.testing.assert_array_equal(resize_frames(x, (2, 2)), want)


def test_events_to_frames_equals_tonic_to_frame():
    """The frames tonic's ToFrame made (this module's integration before), on random unsorted events."""
    pytest.importorskip("tonic", reason="tonic (the snncka[events] extra) is not installed")
    from tonic.transforms import ToFrame

    rng = np.random.default_rng(5)
    for T in (1, 4, 10):
        ev = np.zeros(5000, EVENT_DTYPE)
        ev["t"] = rng.integers(10**6, 3 * 10**6, ev.size)
        ev["x"], ev["y"] = rng.integers(0, 31, ev.size), rng.integers(0, 17, ev.size)
        ev["p"] = rng.random(ev.size) < 0.5
        srt = ev[np.argsort(ev["t"], kind="stable")]
        t0, window = int(srt["t"][0]), (int(srt["t"][-1]) - int(srt["t"][0])) // T + 1
        ref = ToFrame(sensor_size=(31, 17, 2), time_window=window, start_time=t0, end_time=t0 + T * window)(srt)
        np.testing.assert_array_equal(events_to_frames(ev, (31, 17, 2), T), ref)
        assert event_counts(ev, (31, 17, 2), T).dtype == np.int64


@pytest.mark.parametrize(("sensor", "size"), [((240, 180, 2), (48, 48)), ((128, 128, 2), (48, 48)),
                                              ((13, 7, 2), (7, 13)), ((20, 20, 1), (20, 20)), ((9, 6, 2), (2, 3))])
def test_event_frames_equal_counts_then_the_old_resize(sensor, size):
    """Counting events straight into the resized frames = full-resolution counts, then the old matmul resize
    (and the dense resize) -- the frames the datasets got before."""
    rng = np.random.default_rng(sum(sensor))
    w, h, p = sensor
    for T in (1, 3):
        ev = np.zeros(4000, EVENT_DTYPE)
        ev["t"] = rng.integers(0, 10**6, ev.size)
        ev["x"], ev["y"], ev["p"] = rng.integers(0, w, ev.size), rng.integers(0, h, ev.size), rng.random(ev.size) < 0.5
        if p == 1:
            ev["p"] = False
        counts = event_counts(ev, sensor, T)
        got = event_frames(ev, sensor, T, size)
        assert got.shape == (T, p, *size) and got.dtype == np.float32
        np.testing.assert_allclose(got, _old_resize(counts, size), rtol=1e-6, atol=0)
        np.testing.assert_array_equal(got, resize_frames(counts, size))
    assert event_frames(ev[:0], sensor, 2, size).shape == (2, p, *size)
    with pytest.raises(ValueError, match="n_frames must be a positive integer"):
        event_frames(ev[:0], sensor, 0, size)


def test_event_counts_rejects_bad_input():
    ev = np.zeros(3, EVENT_DTYPE)
    with pytest.raises(ValueError, match="n_frames must be a positive integer"):
        event_counts(ev, (2, 2, 2), 0)
    ev["p"] = True
    with pytest.raises(ValueError, match="do not fit a 1-polarity sensor"):
        event_counts(ev, (2, 2, 1), 1)


def _write_bin(path: Path, rows: list[tuple[int, int, int, int]]) -> None:
    """N-MNIST .bin by hand: x, y, p << 7 | t >> 16, t >> 8, t (y = 240: a time-stamp overflow marker)."""
    path.write_bytes(bytes(b for x, y, p, t in rows for b in (x, y, (p << 7) | (t >> 16), (t >> 8) & 255,
                                                                 t & 255)))


def test_read_nmnist_bin_hand_computed(tmp_path):
    _write_bin(tmp_path / "a.bin", [(3, 4, 1, 100), (250, 7, 0, 2**23 - 1), (0, 240, 0, 0), (1, 2, 1, 5),
                                    (0, 240, 0, 0), (9, 9, 0, 6)])
    ev = read_nmnist_bin(tmp_path / "a.bin")
    assert ev.dtype == EVENT_DTYPE
    assert ev["x"].tolist() == [3, 250, 1, 9] and ev["y"].tolist() == [4, 7, 2, 9]
    assert ev["t"].tolist() == [100, 2**23 - 1, 5 + 8192, 6 + 2 * 8192]
    assert ev["p"].tolist() == [True, False, True, False]
    (tmp_path / "b.bin").write_bytes(bytes(7))
    with pytest.raises(ValueError, match="not a whole number of 5-byte events"):
        read_nmnist_bin(tmp_path / "b.bin")


def test_real_nmnist_recording_reads_as_tonic_reads_it():
    path = _sample("sample_nmnist.bin")
    ev = read_nmnist_bin(path)
    assert 1000 < ev.size == path.stat().st_size // 5 and np.all(np.diff(ev["t"]) >= 0)
    pytest.importorskip("tonic", reason="tonic (the snncka[events] extra) is not installed")
    from tonic.io import read_mnist_file

    ref = read_mnist_file(str(path), dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    for k in "xytp":
        np.testing.assert_array_equal(ev[k].astype(np.int64), ref[k])


def test_real_aedat4_recording_reads_as_tonic_reads_it():
    path = _sample("sample.aedat4")
    pytest.importorskip("aedat", reason="aedat (the snncka[events] extra) is not installed")
    ev, (w, h) = read_aedat4(path)
    assert (w, h) == (int(ev["x"].max()) + 1, int(ev["y"].max()) + 1) == (320, 240)  # a larger sensor
    assert ev.size > 10_000 and np.all(np.diff(ev["t"]) >= 0) and 0.2 < ev["p"].mean() < 0.8
    pytest.importorskip("tonic", reason="tonic (the snncka[events] extra) is not installed")
    from tonic.io import read_aedat4 as tonic_read

    ref = tonic_read(str(path))
    ref.dtype.names = ("t", "x", "y", "p")
    for k in "xytp":
        np.testing.assert_array_equal(ev[k], ref[k])


@pytest.mark.parametrize(("name", "sample", "folder"),
                         [("cifar10-dvs", "sample.aedat4", "CIFAR10DVS/airplane/a.aedat4"),
                          ("ncaltech101", "sample_nmnist.bin", "NCALTECH101/Caltech101/ant/image_0001.bin")])
def test_real_recordings_give_the_frames_of_the_old_tonic_pipeline(tmp_path, name, sample, folder):
    """A real recording through the dataset's integration equals tonic's reader + ToFrame + the old
    matmul resize (the pipeline before this module's numpy path)."""
    import snncka.data as D
    import snncka.data_events as DE

    path = _sample(sample)
    pytest.importorskip("tonic", reason="tonic (the snncka[events] extra) is not installed")
    if name == "cifar10-dvs":
        pytest.importorskip("aedat", reason="aedat (the snncka[events] extra) is not installed")
    from tonic.io import read_aedat4 as tonic_aedat
    from tonic.io import read_mnist_file
    from tonic.transforms import ToFrame

    src = D.EVENT_SOURCES[name]
    if name == "cifar10-dvs":
        ev = tonic_aedat(str(path))
        ev.dtype.names = ("t", "x", "y", "p")
    else:
        ev = read_mnist_file(str(path), dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
        ev["x"] -= ev["x"].min()
        ev["y"] -= ev["y"].min()
    inside = (ev["x"] < src.sensor[0]) & (ev["y"] < src.sensor[1])
    ev = ev[inside]
    T = 5
    t0, window = int(ev["t"].min()), (int(ev["t"].max()) - int(ev["t"].min())) // T + 1
    frames = ToFrame(sensor_size=src.sensor, time_window=window, start_time=t0, end_time=t0 + T * window)(ev)
    want = _old_resize(frames, src.size)
    got, outside = DE._recording_frames((name, str(path), T))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert outside == int((~inside).sum()) and (outside > 0) == (name == "cifar10-dvs")
    # and through the whole loader: the recording in tonic's folder layout
    (tmp_path / folder).parent.mkdir(parents=True)
    shutil.copy(path, tmp_path / folder)
    with pytest.warns(UserWarning, match="outside") if outside else _no_warning():
        d = D.get(name, root=tmp_path, frames=T)
    x = d.x_train if len(d.x_train) else d.x_test
    st = d.meta["normalisation"]
    counts = x[0].double() * torch.tensor(st["std"]).view(2, 1, 1) + torch.tensor(st["mean"]).view(2, 1, 1)
    np.testing.assert_allclose(counts.numpy(), want, rtol=1e-5, atol=1e-4)


def _no_warning():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def cm():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield

    return cm()
