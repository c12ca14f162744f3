"""Speaker embeddings (a voiceprint) in numpy, with Resemblyzer's pretrained GE2E encoder.

The weights are `resemblyzer/pretrained.pt` from the `resemblyzer==0.1.4` wheel (Resemble AI,
Apache-2.0), a PyTorch checkpoint in the legacy (pre-1.6) serialisation: a run of pickles, then
the raw storages. Resemblyzer's own code needs torch (~550 MB) for a 1.4 M-parameter LSTM, so
the wheel is installed as a data carrier only (`pip install --no-deps`) and none of its modules
is imported: the file is found through the distribution's metadata, hashed against the pin in
`models.py`, and read with a restricted unpickler that knows an OrderedDict, tensors and
storages and refuses every other global (a checkpoint is a pickle: loading it with `pickle`
would run whatever code it names).

The encoder: 40-band mel power spectrogram (16 kHz, 25 ms Hann window, 10 ms hop, Slaney mel
scale and normalisation), a 3-layer LSTM of 256 units, a 256->256 linear layer with ReLU and L2
normalisation; an utterance is cut into 160-frame (1.6 s) partials at 1.3 per second, their
embeddings averaged and normalised. Two recordings of one speaker have cosine similarity
~0.8-0.95, of different speakers ~0.5-0.75 (measured values: docs/identity.md).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import pickle
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from finrtc.errors import ConfigError
from finrtc.identity.models import VOICE_MODEL_FILE, VOICE_MODEL_SHA256

MODEL_FILE = VOICE_MODEL_FILE
MODEL_SHA256 = VOICE_MODEL_SHA256

SAMPLE_RATE = 16_000
N_FFT = SAMPLE_RATE * 25 // 1000  # 400 samples
HOP = SAMPLE_RATE * 10 // 1000  # 160 samples
N_MELS = 40
PARTIAL_FRAMES = 160
PARTIAL_RATE = 1.3
MIN_COVERAGE = 0.75
HIDDEN = 256
LAYERS = 3

MODEL_DISTRIBUTION = "resemblyzer"
INSTALL_HINT = (
    "install the voice model with `pip install --no-deps resemblyzer==0.1.4` "
    "(a data package here: its torch dependency is not needed)"
)
# The legacy torch format starts with this magic number, pickled.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}

Vector = NDArray[np.float32]


# ---- the checkpoint ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StorageType:
    name: str


@dataclass(frozen=True, slots=True)
class _StorageRef:
    key: str
    dtype: Any
    size: int


@dataclass(frozen=True, slots=True)
class _TensorRef:
    """A tensor whose storage bytes follow the pickle: materialised once they are read."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: _StorageRef, offset: int, shape: tuple[int, ...],
                       stride: tuple[int, ...], *_ignored: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _TensorRef(storage, int(offset), tuple(int(n) for n in shape), tuple(int(n) for n in stride))


class _CheckpointUnpickler(pickle.Unpickler):
    """Knows exactly what a state-dict checkpoint holds; any other global is an error."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"the checkpoint names {module}.{name}, which is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        kind, key, size = pid[1], pid[2], pid[4]
        if not isinstance(kind, _StorageType) or pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        return _StorageRef(str(key), STORAGE_DTYPES[kind.name], int(size))


def _materialise(value: Any, storages: dict[str, NDArray[Any]]) -> Any:
    if isinstance(value, _TensorRef):
        flat = storages[value.storage.key]
        count = int(np.prod(value.shape)) if value.shape else 1
        contiguous = tuple(int(np.prod(value.shape[i + 1:])) for i in range(len(value.shape)))
        if value.shape and value.stride != contiguous:
            raise pickle.UnpicklingError("non-contiguous tensors are not supported")
        if value.offset + count > flat.size:
            raise pickle.UnpicklingError("a tensor reaches past its storage")
        return flat[value.offset: value.offset + count].reshape(value.shape).copy()
    if isinstance(value, dict):
        return type(value)((k, _materialise(v, storages)) for k, v in value.items())
    if isinstance(value, list):
        return [_materialise(v, storages) for v in value]
    if isinstance(value, tuple):
        return tuple(_materialise(v, storages) for v in value)
    return value


def load_legacy_checkpoint(data: bytes) -> dict[str, Any]:
    """A legacy-format torch checkpoint as nested dicts of numpy arrays, without torch."""
    stream = io.BytesIO(data)

    def plain() -> Any:
        return _CheckpointUnpickler(stream).load()

    try:
        if plain() != LEGACY_MAGIC:
            raise pickle.UnpicklingError("not a legacy torch checkpoint (bad magic number)")
        plain()  # protocol version
        info = plain()
        if not isinstance(info, dict) or not info.get("little_endian", False):
            raise pickle.UnpicklingError("only little-endian checkpoints are supported")
        result = plain()
        keys = plain()
        storages: dict[str, NDArray[Any]] = {}
        refs = _storage_refs(result)
        for key in keys:
            (count,) = struct.unpack("<q", stream.read(8))
            ref = refs.get(str(key))
            if ref is None:
                raise pickle.UnpicklingError(f"storage {key} is not used by any tensor")
            raw = stream.read(count * np.dtype(ref.dtype).itemsize)
            storages[str(key)] = np.frombuffer(raw, dtype=np.dtype(ref.dtype).newbyteorder("<"), count=count)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"the voice model checkpoint cannot be read: {error}") from None
    if not isinstance(result, dict):
        raise ConfigError("the voice model checkpoint does not hold a dict")
    loaded: dict[str, Any] = _materialise(result, storages)
    return loaded


def _storage_refs(value: Any, found: dict[str, _StorageRef] | None = None) -> dict[str, _StorageRef]:
    found = {} if found is None else found
    if isinstance(value, _TensorRef):
        found[value.storage.key] = value.storage
    elif isinstance(value, dict):
        for item in value.values():
            _storage_refs(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _storage_refs(item, found)
    return found


def model_path() -> Path:
    try:
        distribution = importlib.metadata.distribution(MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"voiceprints need the resemblyzer data package; {INSTALL_HINT}") from None
    path = Path(str(distribution.locate_file(MODEL_FILE)))
    if not path.is_file():
        raise ConfigError(f"voice model {path} is missing; {INSTALL_HINT}")
    return path


# ---- the spectrogram --------------------------------------------------------------------------


def _hz_to_mel(hz: NDArray[np.float64]) -> NDArray[np.float64]:
    # Slaney's auditory-toolbox scale: linear below 1 kHz, logarithmic above.
    linear = hz / (200.0 / 3)
    log_step = np.log(6.4) / 27.0
    above = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step
    return np.where(hz >= 1000.0, above, linear)


def _mel_to_hz(mel: NDArray[np.float64]) -> NDArray[np.float64]:
    linear = mel * (200.0 / 3)
    log_step = np.log(6.4) / 27.0
    above = 1000.0 * np.exp(log_step * (mel - 15.0))
    return np.where(mel >= 15.0, above, linear)


@cache
def mel_filterbank() -> NDArray[np.float32]:
    """(40, 201) triangular filters over 0-8 kHz, each normalised to unit area (Slaney)."""
    bins = np.linspace(0.0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    top = _hz_to_mel(np.array(SAMPLE_RATE / 2.0))
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), top, N_MELS + 2))
    widths = np.diff(edges)
    offsets = edges[:, None] - bins[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@cache
def _window() -> NDArray[np.float64]:
    # Periodic Hann, as for spectral analysis.
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)


def mel_spectrogram(wav: NDArray[np.float32]) -> NDArray[np.float32]:
    """(frames, 40) mel power spectrogram of 16 kHz audio in [-1, 1]; frames centred on k*10 ms."""
    padded = np.pad(wav.astype(np.float64), N_FFT // 2)
    count = 1 + (padded.size - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(count, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0])
    )
    power = np.abs(np.fft.rfft(frames * _window(), axis=1)) ** 2
    return (power @ mel_filterbank().T.astype(np.float64)).astype(np.float32)


def partial_slices(samples: int) -> list[slice]:
    """Frame ranges of the 1.6 s partials that cover an utterance of `samples` samples."""
    frames = int(np.ceil((samples + 1) / HOP))
    step = int(np.round(SAMPLE_RATE / PARTIAL_RATE / HOP))
    starts = range(0, max(1, frames - PARTIAL_FRAMES + step + 1), step)
    slices = [slice(start, start + PARTIAL_FRAMES) for start in starts]
    last = slices[-1]
    coverage = (samples - last.start * HOP) / (PARTIAL_FRAMES * HOP)
    # A last partial mostly made of padding would dilute the average.
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices.pop()
    return slices


# ---- the network ------------------------------------------------------------------------------


def _sigmoid(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float32)


class VoiceEncoder:
    """The pretrained speaker encoder; stateless after loading, so safe to share across threads."""

    def __init__(self, path: Path | None = None) -> None:
        path = model_path() if path is None else path
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != MODEL_SHA256:
            raise ConfigError(
                f"voice model {path} has SHA-256 {digest}, expected {MODEL_SHA256}: "
                "reinstall it with `pip install --no-deps --force-reinstall resemblyzer==0.1.4`"
            )
        self.digest = digest
        state = load_legacy_checkpoint(data).get("model_state")
        if not isinstance(state, dict):
            raise ConfigError("the voice model checkpoint has no model_state")

        def weight(name: str, shape: tuple[int, ...]) -> NDArray[np.float32]:
            value = state.get(name)
            if not isinstance(value, np.ndarray) or value.shape != shape:
                raise ConfigError(f"the voice model's {name} is missing or not shaped {shape}")
            return np.ascontiguousarray(value, dtype=np.float32)

        self._layers: list[tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]] = []
        for layer in range(LAYERS):
            inputs = N_MELS if layer == 0 else HIDDEN
            w_ih = weight(f"lstm.weight_ih_l{layer}", (4 * HIDDEN, inputs))
            w_hh = weight(f"lstm.weight_hh_l{layer}", (4 * HIDDEN, HIDDEN))
            bias = weight(f"lstm.bias_ih_l{layer}", (4 * HIDDEN,))
            bias = bias + weight(f"lstm.bias_hh_l{layer}", (4 * HIDDEN,))
            self._layers.append((w_ih.T.copy(), w_hh.T.copy(), bias))
        self._linear = weight("linear.weight", (HIDDEN, HIDDEN)).T.copy()
        self._linear_bias = weight("linear.bias", (HIDDEN,))

    def embed_partials(self, mels: NDArray[np.float32]) -> NDArray[np.float32]:
        """(batch, frames, 40) spectrograms -> (batch, 256) L2-normalised embeddings."""
        sequence = mels.astype(np.float32)
        batch, steps, _ = sequence.shape
        hidden = np.zeros((batch, HIDDEN), np.float32)
        for w_ih, w_hh, bias in self._layers:
            # The input projection of every step at once; only the recurrence is sequential.
            projected = sequence @ w_ih + bias
            hidden = np.zeros((batch, HIDDEN), np.float32)
            cell = np.zeros((batch, HIDDEN), np.float32)
            outputs = np.empty((batch, steps, HIDDEN), np.float32)
            for step in range(steps):
                gates = projected[:, step] + hidden @ w_hh
                # PyTorch's gate order: input, forget, cell candidate, output.
                i = _sigmoid(gates[:, :HIDDEN])
                f = _sigmoid(gates[:, HIDDEN: 2 * HIDDEN])
                g = np.tanh(gates[:, 2 * HIDDEN: 3 * HIDDEN])
                o = _sigmoid(gates[:, 3 * HIDDEN:])
                cell = f * cell + i * g
                hidden = o * np.tanh(cell)
                outputs[:, step] = hidden
            sequence = outputs
        raw = np.maximum(hidden @ self._linear + self._linear_bias, 0.0)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return np.asarray(raw / np.maximum(norms, 1e-12), dtype=np.float32)

    def embed_utterance(self, wav: NDArray[np.float32]) -> Vector:
        """The 256-d voiceprint of 16 kHz speech (already trimmed to voiced audio)."""
        slices = partial_slices(wav.size)
        needed = slices[-1].stop * HOP
        if needed >= wav.size:
            wav = np.pad(wav, (0, needed - wav.size))
        mel = mel_spectrogram(wav)
        partials = self.embed_partials(np.stack([mel[s] for s in slices]))
        mean = partials.mean(axis=0)
        return np.asarray(mean / np.linalg.norm(mean), dtype=np.float32)


@cache
def shared_encoder() -> VoiceEncoder:
    return VoiceEncoder()


def similarity(a: Vector, b: Vector) -> float:
    """Cosine similarity of two voiceprints (both unit length): 1 is identical."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- voiced audio -----------------------------------------------------------------------------

VAD_WINDOW = SAMPLE_RATE * 30 // 1000  # 30 ms
# Speech below this level (dBFS of a 30 ms window) is not speech whatever the noise floor.
VAD_MIN_DBFS = -50.0
# A window is voiced when this many dB above the quietest recent windows (the noise floor).
VAD_MARGIN_DB = 12.0
# Pauses up to this many windows inside speech are kept (as Resemblyzer keeps short silences).
VAD_HANGOVER = 6
TARGET_DBFS = -30.0


def to_mono_16k(samples: NDArray[np.int16], sample_rate: int) -> NDArray[np.float32]:
    """int16 (n, channels) or (n,) PCM at any rate -> float mono 16 kHz (linear interpolation
    after a box low-pass: speech energy above 8 kHz does not matter to the encoder)."""
    pcm = samples.astype(np.float32) / 32768.0
    mono = pcm.mean(axis=1) if pcm.ndim == 2 else pcm
    if sample_rate == SAMPLE_RATE:
        return mono
    ratio = sample_rate / SAMPLE_RATE
    if ratio > 1:
        width = max(1, round(ratio))
        mono = np.convolve(mono, np.full(width, 1.0 / width, np.float32), mode="same")
    positions = np.arange(0, mono.size - 1, ratio)
    return np.asarray(np.interp(positions, np.arange(mono.size), mono), dtype=np.float32)


class VoicedAudio:
    """Accumulates the voiced part of a stream of 16 kHz audio, with an energy VAD.

    Not thread-safe: one per track, fed on one thread. Memory is bounded by `max_seconds`."""

    def __init__(self, max_seconds: float) -> None:
        self._limit = int(max_seconds * SAMPLE_RATE)
        self._pending = np.zeros(0, np.float32)
        self._kept: list[NDArray[np.float32]] = []
        self._kept_samples = 0
        self._floor: list[float] = []
        self._since_voice = VAD_HANGOVER + 1
        self.heard_s = 0.0

    @property
    def voiced_s(self) -> float:
        return self._kept_samples / SAMPLE_RATE

    def feed(self, audio: NDArray[np.float32]) -> None:
        self.heard_s += audio.size / SAMPLE_RATE
        pending = np.concatenate([self._pending, audio]) if self._pending.size else audio
        whole = pending.size - pending.size % VAD_WINDOW
        self._pending = pending[whole:].copy()
        for start in range(0, whole, VAD_WINDOW):
            window = pending[start: start + VAD_WINDOW]
            level = 10 * np.log10(float(np.mean(window.astype(np.float64) ** 2)) + 1e-12)
            self._floor.append(level)
            if len(self._floor) > 200:  # the last 6 s
                del self._floor[0]
            floor = float(np.percentile(self._floor, 10))
            voiced = level > VAD_MIN_DBFS and (level > floor + VAD_MARGIN_DB or len(self._floor) < 10)
            self._since_voice = 0 if voiced else self._since_voice + 1
            if self._since_voice <= VAD_HANGOVER and self._kept_samples < self._limit:
                self._kept.append(window.copy())
                self._kept_samples += window.size

    def take(self) -> NDArray[np.float32]:
        """The voiced audio so far, normalised to -30 dBFS (louder only), and reset."""
        wav = np.concatenate(self._kept) if self._kept else np.zeros(0, np.float32)
        self._kept, self._kept_samples = [], 0
        return normalise_volume(wav)


def read_wav(data: bytes) -> NDArray[np.float32]:
    """A 16-bit PCM WAV file (any rate, mono or stereo) as mono 16 kHz audio."""
    import wave

    from finrtc.errors import BadRequestError

    try:
        with wave.open(io.BytesIO(data)) as reader:
            if reader.getsampwidth() != 2:
                raise BadRequestError("the clip must be 16-bit PCM WAV")
            channels, rate = reader.getnchannels(), reader.getframerate()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as error:
        raise BadRequestError(f"the clip is not a readable WAV file: {error}") from None
    if not 8000 <= rate <= 96000:
        raise BadRequestError(f"the clip's sample rate {rate} Hz is not supported (8-96 kHz)")
    samples = np.frombuffer(frames[: len(frames) - len(frames) % (2 * channels)], dtype="<i2")
    return to_mono_16k(samples.reshape(-1, channels), rate)


def normalise_volume(wav: NDArray[np.float32]) -> NDArray[np.float32]:
    if wav.size == 0:
        return wav
    rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
    change = TARGET_DBFS - 20 * np.log10(max(rms, 1e-9))
    # Quiet speech is raised to the training level; loud speech is left (no clipping).
    return wav if change <= 0 else np.asarray(wav * 10 ** (change / 20), dtype=np.float32)


def voiced(audio: NDArray[np.float32], max_seconds: float = 120.0) -> NDArray[np.float32]:
    """The voiced, level-normalised part of a whole 16 kHz clip."""
    collector = VoicedAudio(max_seconds)
    collector.feed(audio)
    return collector.take()


def timed(function: Callable[[], Vector]) -> tuple[Vector, float]:
    """(result, thread CPU seconds) of an embedding computation."""
    started = time.thread_time()
    result = function()
    return result, time.thread_time() - started
