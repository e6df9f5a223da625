"""DVS pixel simulator and events -> frames integration, against naive scalar re-implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from snncka.events import (
    EVENT_DTYPE,
    PixelModel,
    Saccades,
    area_matrix,
    events_to_frames,
    resize_frames,
    simulate_saccades,
)


def _digit_images(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    img = torch.from_numpy(load_digits().images[:n] / 16.0).float()[:, None]
    return torch.nn.functional.interpolate(img, scale_factor=2, mode="bilinear")[:, 0].clamp(0, 1).numpy()


def test_tonic_dtype_is_ours():
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


@pytest.mark.parametrize(("hw", "out"), [((128, 128), (48, 48)), ((180, 240), (48, 48)), ((20, 20), (7, 9))])
def test_area_resize_matches_torch(hw, out):
    x = np.random.default_rng(0).random((2, 3, *hw)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=out, mode="area").numpy()
    np.testing.assert_allclose(resize_frames(x, out), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(area_matrix(hw[0], out[0]).sum(1), 1.0)
