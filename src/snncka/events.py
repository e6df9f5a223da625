"""Event-camera data: a DVS pixel simulator for static images, and events -> frames integration.

``simulate_saccades`` records static images the way N-MNIST and N-Caltech101 were recorded (Orchard et al.
2015): the image moves in front of the sensor along three saccades, and every pixel emits an ON/OFF event
when its log intensity has changed by more than its contrast threshold since its last event. The pixel
model follows v2e (Hu, Liu, Delbruck 2021): per-pixel threshold mismatch (a fixed pattern of the sensor), a
reference reset on every event, a refractory period during which the pixel is held in reset, and shot
noise. Events are numpy structured arrays in tonic's dtype (``tonic.io.events_struct``: x, y, t [us], p).

``events_to_frames`` integrates events into ``T`` frames of equal duration with tonic's ``ToFrame``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["EVENT_DTYPE", "PixelModel", "Saccades", "area_matrix", "events_to_frames", "resize_frames",
           "simulate_saccades"]

#: tonic's event dtype (``tonic.io.events_struct``), spelled out so that importing this module stays cheap.
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])


@dataclass(frozen=True)
class PixelModel:
    """DVS pixel parameters (defaults from v2e's nominal DVS: 0.2 log-unit thresholds, 3% mismatch).

    ``log_floor`` is the dark level added before the logarithm (``L = log(I + log_floor)``, I in [0, 1]) so
    that black pixels have a finite log intensity, like a photoreceptor's dark current.
    """

    threshold: float = 0.2
    threshold_sigma: float = 0.03
    refractory_us: int = 1000
    shot_noise_hz: float = 1.0
    log_floor: float = 0.1

    def __post_init__(self) -> None:
        if not self.threshold > 0 or self.threshold_sigma < 0 or self.refractory_us < 0:
            raise ValueError(f"invalid pixel model {self}: need threshold > 0, threshold_sigma >= 0, "
                             "refractory_us >= 0")
        if self.shot_noise_hz < 0 or not self.log_floor > 0:
            raise ValueError(f"invalid pixel model {self}: need shot_noise_hz >= 0 and log_floor > 0")


@dataclass(frozen=True)
class Saccades:
    """The image's motion: its top-left corner (x, y) in sensor pixels visits ``vertices`` in order and
    returns to the first, one straight saccade of ``saccade_us`` each (N-MNIST: 3 saccades, ~100 ms each),
    simulated in steps of ``dt_us``."""

    vertices: tuple[tuple[float, float], ...] = ((0.0, 0.0), (4.0, 2.0), (2.0, 4.0))
    saccade_us: int = 100_000
    dt_us: int = 1000

    def __post_init__(self) -> None:
        if len(self.vertices) < 2 or self.dt_us <= 0 or self.saccade_us < self.dt_us:
            raise ValueError(f"invalid saccades {self}: need >= 2 vertices and saccade_us >= dt_us > 0")
        if any(v < 0 for xy in self.vertices for v in xy):
            raise ValueError(f"saccade vertices must be non-negative sensor offsets, got {self.vertices}")

    @property
    def duration_us(self) -> int:
        return len(self.vertices) * self.saccade_us

    def position(self, t_us: float) -> tuple[float, float]:
        """Image offset (x, y) at time ``t_us`` (piecewise linear along the closed path)."""
        k = min(int(t_us // self.saccade_us), len(self.vertices) - 1)
        a, b = self.vertices[k], self.vertices[(k + 1) % len(self.vertices)]
        f = (t_us - k * self.saccade_us) / self.saccade_us
        return a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])


def _render(images: np.ndarray, sensor_hw: tuple[int, int], ox: float, oy: float) -> np.ndarray:
    """Images ``[N, h, w]`` placed with their top-left corner at sub-pixel (ox, oy) on a black sensor,
    bilinear in the fractional part."""
    n, h, w = images.shape
    sh, sw = sensor_hw
    ix, iy = math.floor(ox), math.floor(oy)
    fx, fy = ox - ix, oy - iy
    out = np.zeros((n, sh + 1, sw + 1), np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            if wx * wy:
                out[:, iy + dy:iy + dy + h, ix + dx:ix + dx + w] += np.float32(wx * wy) * images
    return out[:, :sh, :sw]


def simulate_saccades(
    images: np.ndarray,
    sensor_size: tuple[int, int],
    seed: int,
    pixel: PixelModel | None = None,
    saccades: Saccades | None = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """Record static ``images`` ``[N, h, w]`` (intensities in [0, 1]) with a simulated DVS of
    ``sensor_size = (width, height)`` while they move along ``saccades``.

    Returns one time-sorted structured array per image in ``EVENT_DTYPE`` (t in microseconds, p = ON).
    Deterministic for a ``seed``: the seed draws the sensor's threshold pattern (shared by all recordings,
    as one camera records a whole dataset), each recording's shot noise and the event times within a step.
    """
    pixel, saccades = pixel or PixelModel(), saccades or Saccades()
    images = np.asarray(images, np.float32)
    if images.ndim != 3 or images.size == 0:
        raise ValueError(f"images must be a non-empty [N, h, w] array, got shape {images.shape}")
    if images.min() < 0 or images.max() > 1:
        raise ValueError("image intensities must lie in [0, 1]; scale them first (e.g. digits / 16)")
    n, h, w = images.shape
    sw, sh = sensor_size
    max_x = max(v[0] for v in saccades.vertices)
    max_y = max(v[1] for v in saccades.vertices)
    if w + math.ceil(max_x) > sw or h + math.ceil(max_y) > sh:
        raise ValueError(f"a {w}x{h} image moving by up to ({max_x}, {max_y}) px leaves a {sw}x{sh} sensor; "
                         "enlarge sensor_size or shrink the saccades")
    rng = np.random.default_rng(seed)
    th_on = np.maximum(rng.normal(pixel.threshold, pixel.threshold_sigma, (sh, sw)), 0.01).astype(np.float32)
    th_off = np.maximum(rng.normal(pixel.threshold, pixel.threshold_sigma, (sh, sw)), 0.01).astype(np.float32)

    def log_intensity(t: float) -> np.ndarray:
        return np.log(_render(images, (sh, sw), *saccades.position(t)) + np.float32(pixel.log_floor))

    ref = log_intensity(0.0)  # every pixel starts adapted to the first view
    unblock = np.zeros((n, sh, sw), np.int64)
    p_noise = pixel.shot_noise_hz * saccades.dt_us * 1e-6
    parts: list[tuple[np.ndarray, ...]] = []
    steps = range(1, saccades.duration_us // saccades.dt_us + 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="DVS simulation", unit="step")
    for k in steps:
        t = k * saccades.dt_us
        L = log_intensity(t)
        d = L - ref
        free = unblock <= t
        on = free & (d > th_on)
        off = free & (d < -th_off)
        fire = on | off
        # held in reset while refractory, and reset to the present log intensity by every event
        ref = np.where(fire | ~free, L, ref)
        unblock[fire] = t + pixel.refractory_us
        if p_noise > 0:  # shot noise: Bernoulli(p_noise) per pixel and step, random polarity
            hits = rng.choice(fire.size, rng.binomial(fire.size, p_noise), replace=False)
            hits = hits[~fire.reshape(-1)[hits]]
            fire.reshape(-1)[hits] = True
            on.reshape(-1)[hits] = rng.random(hits.size) < 0.5
        idx_n, idx_y, idx_x = np.nonzero(fire)
        jitter = rng.integers(0, saccades.dt_us, idx_n.size)
        parts.append((idx_n, idx_x, idx_y, t - jitter, on[idx_n, idx_y, idx_x]))
    sample, x, y, t, p = (np.concatenate(c) for c in zip(*parts, strict=True))
    order = np.argsort(sample * np.int64(saccades.duration_us + 1) + t, kind="stable")
    ev = np.empty(order.size, EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x[order], y[order], t[order], p[order]
    bounds = np.searchsorted(sample[order], np.arange(n + 1))
    return [ev[bounds[i]:bounds[i + 1]] for i in range(n)]


def events_to_frames(events: np.ndarray, sensor_size: tuple[int, int, int], n_frames: int) -> np.ndarray:
    """Integrate events into ``n_frames`` frames of equal duration: ``[T, P, H, W]`` float32 event counts.

    Uses tonic's ``ToFrame`` with a time window of ``floor(span / T) + 1`` us starting at the first event,
    so the T windows cover the whole recording and every event lands in exactly one frame (tonic's
    ``n_time_bins`` floors the window to ``span // T`` and drops the events after the last whole window).
    ``sensor_size`` is tonic's ``(width, height, polarities)``; events outside it raise an error.
    """
    from tonic.transforms import ToFrame

    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    w, h, p = sensor_size
    frames = np.zeros((n_frames, p, h, w), np.float32)
    if events.size == 0:
        return frames
    x, y = events["x"].astype(np.int64), events["y"].astype(np.int64)
    if x.min() < 0 or y.min() < 0 or x.max() >= w or y.max() >= h:
        raise ValueError(f"events span x {x.min()}..{x.max()}, y {y.min()}..{y.max()}, outside the "
                         f"{w}x{h} sensor; give the right sensor_size")
    t = events["t"].astype(np.int64)
    if np.any(np.diff(t) < 0):
        events = events[np.argsort(t, kind="stable")]
        t = events["t"].astype(np.int64)
    t0, span = int(t[0]), int(t[-1] - t[0])
    window = span // n_frames + 1
    to_frame = ToFrame(sensor_size=(w, h, p), time_window=window, start_time=t0,
                       end_time=t0 + n_frames * window)
    out = to_frame(events)
    if out.shape != frames.shape:
        raise RuntimeError(f"tonic's ToFrame returned shape {out.shape}, expected {frames.shape}")
    if out.min() >= 0 and int(out.sum(dtype=np.int64)) == events.size:
        return out.astype(np.float32)
    # tonic counts in int16: a pixel with more than 32767 events (a hot pixel) wraps; count in int64
    b = np.minimum((t - t0) // window, n_frames - 1)
    pol = events["p"].astype(np.int64)
    flat = ((b * p + pol) * h + y) * w + x
    return np.bincount(flat, minlength=frames.size).reshape(frames.shape).astype(np.float32)


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` averaging weights of area resampling (torch's ``interpolate(mode='area')``, i.e.
    adaptive average pooling: output i averages inputs floor(i*n_in/n_out) .. ceil((i+1)*n_in/n_out)-1)."""
    m = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        a, b = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, a:b] = 1.0 / (b - a)
    return m


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-resample frames ``[..., H, W]`` to ``size = (height, width)`` (float32)."""
    h, w = frames.shape[-2:]
    if (h, w) == tuple(size):
        return frames.astype(np.float32, copy=False)
    ry, rx = area_matrix(h, size[0]), area_matrix(w, size[1])
    return (ry @ frames.astype(np.float64) @ rx.T).astype(np.float32)
