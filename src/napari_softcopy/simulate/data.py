"""The synthetic microscopy data: deterministic, cheap, and compressible like the real thing.

A few broad blobs over a low-frequency background that drifts a little from timepoint to
timepoint, photon and read noise, and a camera offset, so no chunk ever equals the fill value
0 and the default codecs compress it to roughly half its size. :func:`frame` recomputes, bit
for bit, the data any timepoint received, so tests can compare what a copy holds with what was
written.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .presets import Preset, lookup

# Data model (arbitrary units = camera counts).
_OFFSET = 100.0  # camera bias: keeps every voxel far above the fill value 0
_GAIN = 1.0  # photon noise: variance = gain * signal
_READ_NOISE = 2.0  # read noise standard deviation
_BACKGROUND = 40.0  # mean of the low-frequency background before attenuation
_BLOBS = 6  # broad gaussian blobs per channel
_BLOB_AMPLITUDE = (250.0, 1500.0)
_MARGIN = 4  # largest drift in y and x, in pixels
_NOISE_CLIP = 6.0  # noise is clipped to +-6 sigma: values stay within [~85, ~10,000]

# Independent random streams derived from the seed.
_STREAM_STRUCTURE = 1
_STREAM_NOISE = 2
_STREAM_FRAME = 3
_STREAM_DRIFT = 4


def _split_spatial(spatial: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(channels, z, y, x) of the non-time axes."""
    y, x = spatial[-2:]
    z = spatial[-3] if len(spatial) >= 3 else 1
    lead = math.prod(spatial[:-3]) if len(spatial) > 3 else 1
    return lead, z, y, x


@functools.lru_cache(maxsize=8)
def structure(spatial: tuple[int, ...], seed: int, image: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free expected counts (offset included) and the noise sigma, with a drift margin.

    Both have shape ``(channels, z, y + 2 * margin, x + 2 * margin)``, float32, read-only.
    """
    lead, nz, ny, nx = _split_spatial(spatial)
    py, px = ny + 2 * _MARGIN, nx + 2 * _MARGIN
    signal = np.empty((lead, nz, py, px), np.float32)
    zz = np.arange(nz, dtype=np.float64)
    yy = np.arange(py, dtype=np.float64)
    xx = np.arange(px, dtype=np.float64)
    attenuation = (1.0 - 0.3 * zz / max(nz - 1, 1)).astype(np.float32)[:, None, None]
    for c in range(lead):
        rng = np.random.default_rng([seed, image, c, _STREAM_STRUCTURE])
        fy, fx = rng.uniform(0.5, 2.5, 2)
        phy, phx = rng.uniform(0.0, 2 * np.pi, 2)
        by = 1.0 + np.cos(2 * np.pi * fy * yy / py + phy)
        bx = 1.0 + np.cos(2 * np.pi * fx * xx / px + phx)
        vol = signal[c]
        vol[...] = (_BACKGROUND * (0.25 + by[:, None] * bx[None, :])).astype(np.float32)
        for _ in range(_BLOBS):
            cz, cy, cx = rng.uniform(0.0, 1.0, 3) * (nz, py, px)
            sz = max(1.0, rng.uniform(0.15, 0.4) * nz)
            sy = max(1.5, rng.uniform(0.06, 0.2) * py)
            sx = max(1.5, rng.uniform(0.06, 0.2) * px)
            amplitude = rng.uniform(*_BLOB_AMPLITUDE)
            gz = amplitude * np.exp(-0.5 * ((zz - cz) / sz) ** 2)
            gyx = (
                np.exp(-0.5 * ((yy - cy) / sy) ** 2)[:, None]
                * np.exp(-0.5 * ((xx - cx) / sx) ** 2)[None, :]
            )
            vol += gz.astype(np.float32)[:, None, None] * gyx.astype(np.float32)[None]
        vol *= attenuation
    sigma = np.sqrt(_GAIN * signal + np.float32(_READ_NOISE**2))
    signal += np.float32(_OFFSET)
    signal.flags.writeable = False
    sigma.flags.writeable = False
    return signal, sigma


@functools.lru_cache(maxsize=4)
def noise_bank(n: int, seed: int) -> tuple[np.ndarray, int]:
    """Standard-normal noise (float32, clipped) of length ``n + slack``, and ``slack``.

    A timepoint takes ``n`` consecutive values starting at a random offset in ``[0, slack]``:
    drawing fresh gaussian noise for every timepoint would cost more than the rest together.
    """
    slack = max(1024, min(n, 1 << 20))
    rng = np.random.default_rng([seed, _STREAM_NOISE])
    bank = rng.standard_normal(n + slack, dtype=np.float32)
    np.clip(bank, -_NOISE_CLIP, _NOISE_CLIP, out=bank)
    bank.flags.writeable = False
    return bank, slack


def _drift(t: int, seed: int) -> tuple[int, int]:
    """Offset of timepoint ``t`` into the margin-padded structure (a slow wobble in y and x)."""
    phy, phx = np.random.default_rng([seed, _STREAM_DRIFT]).uniform(0.0, 2 * np.pi, 2)
    dy = _MARGIN + round(_MARGIN * math.sin(2 * math.pi * t / 29.0 + phy))
    dx = _MARGIN + round(_MARGIN * math.sin(2 * math.pi * t / 41.0 + phx))
    return dy, dx


def downsample(a: np.ndarray) -> np.ndarray:
    """Halve the last two axes by a rounded 2x2 mean (an odd edge is repeated)."""
    ny, nx = a.shape[-2:]
    if ny % 2 or nx % 2:
        pad = [(0, 0)] * (a.ndim - 2) + [(0, ny % 2), (0, nx % 2)]
        a = np.pad(a, pad, mode="edge")
        ny, nx = a.shape[-2:]
    blocks = a.reshape(*a.shape[:-2], ny // 2, 2, nx // 2, 2).astype(np.uint32)
    return ((blocks.sum(axis=(-3, -1)) + 2) // 4).astype(a.dtype)


def frame(
    preset: str | Preset,
    t: int,
    seed: int = 0,
    shape: tuple[int, ...] | None = None,
    *,
    image: int = 0,
    level: int = 0,
) -> np.ndarray:
    """The data written for timepoint ``t`` (deterministic).

    Parameters
    ----------
    preset : str or Preset
        The preset (only its non-time shape matters).
    t : int
        Timepoint index (>= 0).
    seed : int
        The seed given to :func:`simulate`.
    shape : tuple of int, optional
        The shape override given to :func:`simulate`, if any.
    image : int
        Image index within a plate (see :func:`array_paths`); 0 otherwise.
    level : int
        Resolution level of a multiscale image (see :func:`array_paths`).

    Returns
    -------
    numpy.ndarray
        uint16 array of the shape of one timepoint (``shape[1:]``, y and x halved per level).
        Every value is at least about 85: no chunk ever equals the fill value 0.
    """
    if t < 0 or image < 0 or level < 0:
        raise ValueError("t, image and level must be >= 0")
    p = lookup(preset)
    spatial = tuple(int(n) for n in (shape if shape is not None else p.shape))[1:]
    lead, nz, ny, nx = _split_spatial(spatial)
    signal, sigma = structure(spatial, seed, image)
    n = lead * nz * ny * nx
    bank, slack = noise_bank(n, seed)
    start = int(np.random.default_rng([seed, image, t, _STREAM_FRAME]).integers(0, slack + 1))
    noise = bank[start : start + n].reshape(lead, nz, ny, nx)
    dy, dx = _drift(t, seed)
    window = (slice(None), slice(None), slice(dy, dy + ny), slice(dx, dx + nx))
    work = np.multiply(sigma[window], noise)
    work += signal[window]
    out = work.astype(np.uint16).reshape(spatial)
    for _ in range(level):
        out = downsample(out)
    return out
