"""Log-mel bands of 16 kHz sound, as the speaker encoder (`voices`) was trained on them.

The encoder's package computes them with librosa (`melspectrogram`: a periodic Hamming window,
frames not centred, power 2, Slaney's mel scale and area-normalised filters); this is the same
arithmetic in NumPy alone, equal to librosa's to float precision (`tests/test_speakers.py`
checks it). Importing librosa costs a Whisper server about 120 MB and seconds of start-up
(numba, LLVM) that these few lines do not.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

BLOCK_FRAMES = 4096  # frames whose spectrum is held at once


@functools.cache
def _window(n_fft: int, win_length: int) -> Any:
    """A periodic Hamming window of `win_length`, centred in `n_fft` samples."""
    n = np.arange(win_length)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(window, (left, n_fft - win_length - left))


def _hz_to_mel(hz: Any) -> Any:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: Any) -> Any:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log, linear)


@functools.cache
def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> Any:
    """(n_mels, n_fft // 2 + 1) triangular filters from 0 Hz to Nyquist, each of unit area."""
    bins = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = np.subtract.outer(edges, bins)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def log_mel(
    samples: Any, sample_rate: int, n_fft: int, win_length: int, hop: int, n_mels: int
) -> Any:
    """(frames, n_mels) log10 mel power of `samples`, a frame every `hop` samples."""
    y = np.asarray(samples, dtype=np.float32)
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    count = 1 + (len(y) - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(
        y, shape=(count, n_fft), strides=(y.strides[0] * hop, y.strides[0]), writeable=False
    )
    window = _window(n_fft, win_length).astype(np.float32)
    filters = mel_filters(sample_rate, n_fft, n_mels).T
    out = np.empty((count, n_mels), np.float32)
    # A block of frames at a time: the spectrum of 20 minutes at once held about 1 GB (NumPy's
    # FFT works in double precision); a block's is 16 MB whatever the length.
    for at in range(0, count, BLOCK_FRAMES):
        block = frames[at : at + BLOCK_FRAMES] * window
        power = np.abs(np.fft.rfft(block, axis=1)) ** 2
        out[at : at + len(block)] = np.log10(power.astype(np.float32) @ filters + 1e-10)
    return out
