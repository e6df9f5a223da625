"""Event-camera data: a DVS pixel simulator for static images, and events -> frames integration.

``simulate_saccades`` records static images the way N-MNIST and N-Caltech101 were recorded (Orchard et al.
2015): the image moves in front of the sensor along three saccades, and every pixel emits an ON/OFF event
when its log intensity has changed by more than its contrast threshold since its last event. The pixel
model follows v2e (Hu, Liu, Delbruck 2021): per-pixel threshold mismatch (a fixed pattern of the sensor), a
reference reset on every event, a refractory period during which the pixel is held in reset, and shot
noise. Events are numpy structured arrays in tonic's dtype (``tonic.io.events_struct``: x, y, t [us], p).

``event_counts`` / ``events_to_frames`` integrate events into ``T`` frames of equal duration (tonic's
``ToFrame`` semantics, in one ``bincount``), ``resize_frames`` area-resamples frames, and ``read_nmnist_bin``
/ ``read_aedat4`` read the recording formats of N-Caltech101 and CIFAR10-DVS. Numpy only (AEDAT4 needs the
``aedat`` package, in the ``snncka[events]`` extra): importing this module and simulating recordings need
neither tonic nor torch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["EVENT_DTYPE", "MissingExtraError", "PixelModel", "Saccades", "area_bounds", "event_counts",
           "event_frames", "events_to_frames", "read_aedat4", "read_nmnist_bin", "resize_frames", "simulate_saccades"]

#: tonic's event dtype (``tonic.io.events_struct``), spelled out so that importing this module stays cheap.
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])


class MissingExtraError(ImportError):
    """An optional dependency of snncka is not installed; the message names the extra that brings it."""


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


def _check_frames(n_frames: int) -> None:
    if isinstance(n_frames, bool) or not isinstance(n_frames, int | np.integer) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}")


def _frame_index(events: np.ndarray, sensor_size: tuple[int, int, int],
                 n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: ``frame * P + polarity``, x and y (int64), after checking them against the sensor.

    The T frames are time windows of ``floor(span / T) + 1`` us starting at the first event."""
    _check_frames(n_frames)
    w, h, p = sensor_size
    x, y, t, pol = (events[k].astype(np.int64) for k in ("x", "y", "t", "p"))
    if x.min() < 0 or y.min() < 0 or x.max() >= w or y.max() >= h:
        raise ValueError(f"events span x {x.min()}..{x.max()}, y {y.min()}..{y.max()}, outside the "
                         f"{w}x{h} sensor; give the right sensor_size")
    if pol.min() < 0 or pol.max() >= p:
        raise ValueError(f"event polarities {pol.min()}..{pol.max()} do not fit a {p}-polarity sensor")
    t -= t.min()
    t //= t.max() // n_frames + 1
    t *= p
    t += pol
    return t, x, y


def event_counts(events: np.ndarray, sensor_size: tuple[int, int, int], n_frames: int) -> np.ndarray:
    """Integrate events into ``n_frames`` frames of equal duration: ``[T, P, H, W]`` int64 event counts.

    The time window is ``floor(span / T) + 1`` us starting at the first event, so the T windows cover the
    whole recording and every event lands in exactly one frame (as tonic's ``ToFrame`` with that
    ``time_window``; its ``n_time_bins`` floors the window to ``span // T`` and drops the events after the
    last whole window). ``sensor_size`` is tonic's ``(width, height, polarities)``; events outside it raise
    an error. One ``bincount``: no per-frame loop, no sorting, counts never wrap (tonic counts in int16).
    """
    w, h, p = sensor_size
    shape = (int(n_frames), p, h, w)
    if events.size == 0:
        _check_frames(n_frames)
        return np.zeros(shape, np.int64)
    fp, x, y = _frame_index(events, sensor_size, n_frames)
    return np.bincount((fp * h + y) * w + x, minlength=math.prod(shape)).reshape(shape)


def event_frames(events: np.ndarray, sensor_size: tuple[int, int, int], n_frames: int,
                 size: tuple[int, int]) -> np.ndarray:
    """``resize_frames(event_counts(events, sensor_size, n_frames), size)`` without the full-resolution
    frames: each event is counted directly into the output pixels whose area windows hold it (one or two
    per axis when shrinking by a fractional ratio), then every output pixel is divided by its window's
    area. Float32 ``[T, P, size[0], size[1]]``.

    Exact (integer counts until the one division), and its arrays are the size of the event list and of the
    output: the dense route allocates ``T x P x H x W`` int64 counts and their cumulative sums per
    recording (7 MB each for N-Caltech101 at T = 10), which the allocator returns to the system and
    page-faults back in for every recording.
    """
    w, h, p = sensor_size
    ho, wo = size
    ny, nx = (b - a for a, b in (area_bounds(h, ho), area_bounds(w, wo)))
    out_size = int(n_frames) * p * ho * wo
    if events.size == 0:
        _check_frames(n_frames)
        return np.zeros((int(n_frames), p, ho, wo), np.float32)
    fp, x, y = _frame_index(events, sensor_size, n_frames)
    idx, x = _spread(fp, y, _windows_of(h, ho), ho, x)  # (frame * P + polarity) * ho + output row
    idx, _ = _spread(idx, x, _windows_of(w, wo), wo)  # ... * wo + output column
    counts = np.bincount(idx, minlength=out_size)
    frames = counts.reshape(int(n_frames), p, ho, wo) / (ny[:, None] * nx[None, :])
    return frames.astype(np.float32)


def _spread(idx: np.ndarray, coord: np.ndarray, windows: tuple[np.ndarray, ...], n_out: int,
            carry: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``idx * n_out + window`` for every (event, window holding the event's ``coord``) pair: the events
    once per window they fall in (``windows`` from ``_windows_of``), with ``carry`` (another per-event
    array) repeated alike."""
    idx = idx * n_out
    out, carried = [idx + windows[0][coord]], [carry]  # every input lies in at least one window
    for table in windows[1:]:
        w = table[coord]
        more = np.flatnonzero(w >= 0)
        out.append(idx[more] + w[more])
        carried.append(None if carry is None else carry[more])
    if len(out) == 1:
        return out[0], carry
    return np.concatenate(out), None if carry is None else np.concatenate(carried)


@functools.lru_cache(maxsize=32)
def _windows_of(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
    """For area resampling ``n_in -> n_out``: the k-th output window that holds each input index, one
    array per k (-1 where an input is in fewer than k + 1 windows)."""
    a, b = area_bounds(n_in, n_out)
    per_input: list[list[int]] = [[] for _ in range(n_in)]
    for i in range(n_out):
        for r in range(int(a[i]), int(b[i])):
            per_input[r].append(i)
    k = max(len(v) for v in per_input)
    table = np.full((k, n_in), -1, np.int64)
    for r, v in enumerate(per_input):
        table[: len(v), r] = v
    return tuple(table)


def events_to_frames(events: np.ndarray, sensor_size: tuple[int, int, int], n_frames: int) -> np.ndarray:
    """``event_counts`` as float32 frames ``[T, P, H, W]``."""
    return event_counts(events, sensor_size, n_frames).astype(np.float32)


def area_bounds(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The input ranges ``[a_i, b_i)`` that area resampling averages for each output i: torch's
    ``interpolate(mode='area')``, i.e. adaptive average pooling, ``a_i = floor(i*n_in/n_out)``,
    ``b_i = ceil((i+1)*n_in/n_out)`` (neighbouring ranges overlap by a pixel when the ratio is fractional)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"area resampling needs sizes >= 1, got {n_in} -> {n_out}")
    i = np.arange(n_out, dtype=np.int64)
    return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)


def _pool_axis(x: np.ndarray, n_out: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Window sums of ``x`` along ``axis`` for area resampling to ``n_out``, from one cumulative sum (exact
    for integers), and the window lengths."""
    a, b = area_bounds(x.shape[axis], n_out)
    c = np.cumsum(x, axis=axis, dtype=np.int64 if x.dtype.kind in "biu" else np.float64)
    hi = np.take(c, b - 1, axis=axis)
    lo = np.take(c, np.maximum(a - 1, 0), axis=axis)
    lo *= (a > 0).reshape((-1,) + (1,) * (x.ndim - 1 - axis))  # windows starting at 0: nothing before
    return hi - lo, b - a


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-resample frames ``[..., H, W]`` to ``size = (height, width)``, as float32.

    Equal to torch's ``interpolate(mode='area')`` (adaptive average pooling): each output pixel is the mean
    of its window of input pixels. Computed as window sums of cumulative sums along W, then H (integer
    counts stay exact in int64; floats are summed in float64): a few passes over the frames, no matrix
    product (so no BLAS threads to contend with other jobs for the cores).
    """
    if frames.ndim < 2:
        raise ValueError(f"frames must be [..., H, W], got shape {frames.shape}")
    h, w = frames.shape[-2:]
    if (h, w) == tuple(size):
        return frames.astype(np.float32, copy=False)
    sums, nx = _pool_axis(frames, size[1], frames.ndim - 1)
    sums, ny = _pool_axis(sums, size[0], frames.ndim - 2)
    return (sums / (ny[:, None] * nx[None, :])).astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Recording formats
# --------------------------------------------------------------------------------------------------------


def read_nmnist_bin(path: str | Path) -> np.ndarray:
    """An N-MNIST / N-Caltech101 recording (Orchard et al. 2015) in ``EVENT_DTYPE``: 40 bits per event,
    x (8 bits), y (8), polarity (1), time in us (23). Events with y = 240 are not events but time-stamp
    overflow markers: each adds 2**13 us to the times of the events after it (as the format's reference
    reader, and tonic's ``read_mnist_file``, do) and is dropped."""
    raw = np.fromfile(path, np.uint8)
    if raw.size % 5:
        raise ValueError(f"{path} holds {raw.size} bytes, not a whole number of 5-byte events")
    raw = raw.reshape(-1, 5)
    t = (raw[:, 2] & 127).astype(np.int64) << 16
    t |= raw[:, 3].astype(np.int64) << 8
    t |= raw[:, 4]
    x, y, p = raw[:, 0], raw[:, 1], raw[:, 2] >= 128
    overflow = y == 240
    if overflow.any():
        t += np.cumsum(overflow, dtype=np.int64) << 13
        keep = ~overflow
        x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    ev = np.empty(t.size, EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


def read_aedat4(path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """The events of an AEDAT4 file (iniVation's container; CIFAR10-DVS as tonic ships it) in
    ``EVENT_DTYPE``, and the recording sensor's (width, height). Reads the lowest-numbered event stream
    (as tonic's ``read_aedat4`` does) with the ``aedat`` package, which decompresses LZ4/zstd packets."""
    try:
        import aedat
    except ImportError as e:
        raise MissingExtraError("reading AEDAT4 recordings needs the aedat package: pip install "
                                "'snncka[events]'") from e
    decoder = aedat.Decoder(str(path))
    streams = {i: s for i, s in decoder.id_to_stream().items() if s.get("type") == "events"}
    if not streams:
        raise ValueError(f"{path} holds no event stream")
    sid = min(streams)
    packets = [p["events"] for p in decoder if p["stream_id"] == sid and "events" in p]
    ev = np.empty(sum(len(p) for p in packets), EVENT_DTYPE)
    if packets:
        raw = np.concatenate(packets)
        ev["x"], ev["y"], ev["t"], ev["p"] = raw["x"], raw["y"], raw["t"], raw["on"]
    return ev, (int(streams[sid].get("width", 0)), int(streams[sid].get("height", 0)))
