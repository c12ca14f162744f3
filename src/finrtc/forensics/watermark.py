"""Invisible (forensic) watermark: a 32-bit ID spread over the luma of every frame.

Scheme (format v1):
- The frame is divided into a fixed GRID_H x GRID_W grid of cells, whatever the resolution, so
  a rescaled copy (a 720p export of a 480p call, a full-screen recording) still lines up.
- A keyed PRNG gives every cell a chip (+1/-1) and assigns it to one of the CODED_BITS channel
  symbols of the payload (32-bit ID + CRC-16, rate-1/2 K=7 convolutional code, see `ecc`).
  Each symbol is carried by ~28 cells scattered over the frame.
- Embedding adds `strength * gain * chip * symbol` to every pixel of a cell: a flat offset per
  cell is low-frequency, which VP8 keeps even at low bitrates. `gain` is a texture mask (mean
  luma gradient of the cell): flat areas, where a step between cells would show, get less.
- Extraction averages each cell's luma, removes the picture with a cell-level Laplacian (cell
  minus the mean of its four neighbours), sums over frames, correlates per symbol and runs a
  soft Viterbi decoder. A result is only reported when the CRC matches AND the correlation
  between the soft symbols and the re-encoded codeword clears a threshold calibrated on
  unmarked video, so an unmarked or differently keyed video yields no ID.
- Channels: the live mark (same for every subscriber) and the per-recipient export mark use
  independent patterns, so the extractor reports which kind of ID it found. A recipient mark
  added on top of a live mark dominates it: the export then reliably names its recipient, and
  the live ID may or may not still decode (it is never decoded wrongly: CRC + threshold).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from finrtc.forensics.ecc import CODED_BITS, encode_payload, split_info, viterbi_decode

FORMAT_VERSION = 1
GRID_W = 64
GRID_H = 48
# Used when an operator configures no key. Anyone can then read (and estimate) the mark, which
# still traces honest leaks; a secret key also stops a leaker from locating the pattern.
DEFAULT_KEY = b"finrtc-forensic-watermark-v1"
DEFAULT_STRENGTH = 3.0
# Mean absolute luma gradient per pixel of distance that counts as fully "textured".
ACTIVITY_REFERENCE = 3.0
MIN_GAIN = 0.4
MAX_GAIN = 1.0
# Normalised correlation a decoded codeword must reach; unmarked video stays far below it.
SCORE_THRESHOLD = 0.6
RESIDUAL_CLIP = 1.0

U8 = NDArray[np.uint8]


class Channel(enum.IntEnum):
    LIVE = 0
    RECIPIENT = 1


@dataclass(frozen=True)
class Pattern:
    """The keyed spreading pattern of one channel: cell chips and cell -> symbol assignment."""

    chips: NDArray[np.int8]
    symbol_of_cell: NDArray[np.intp]


@functools.lru_cache(maxsize=16)
def pattern(key: bytes, channel: Channel) -> Pattern:
    digest = hashlib.sha256(b"finrtc-wm-pattern|%d|%d|" % (FORMAT_VERSION, channel) + key).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:16], "big"))
    chips = rng.choice(np.array([-1, 1], dtype=np.int8), size=(GRID_H, GRID_W))
    symbol_of_cell = (rng.permutation(GRID_H * GRID_W) % CODED_BITS).reshape(GRID_H, GRID_W)
    return Pattern(chips, symbol_of_cell.astype(np.intp))


def derive_mark_id(key: bytes, *fields: str) -> int:
    """A 32-bit ID naming `fields` (e.g. session, participant, time bucket): a keyed hash.

    The mapping is not invertible on purpose; whoever assigns an ID records what it names
    (the hook emits a `watermark_assigned` event that the archive seals).
    """
    message = "\x1f".join(fields).encode()
    return int.from_bytes(hmac.new(key, message, hashlib.sha256).digest()[:4], "big")


def live_mark_id(key: bytes, session_id: str, participant: str, time_bucket: int) -> int:
    """The ID the forensic_watermark hook embeds for a publisher in one time bucket."""
    return derive_mark_id(key, "live", session_id, participant, str(time_bucket))


def recipient_mark_id(key: bytes, session_id: str, recipient: str) -> int:
    """The ID `finrtc export --mark-for RECIPIENT` embeds (on Channel.RECIPIENT)."""
    return derive_mark_id(key, "recipient", session_id, recipient)


def luma_psnr(original: NDArray[np.uint8], marked: NDArray[np.uint8]) -> float:
    """PSNR in dB between two luma planes (infinite when identical)."""
    error = np.mean((original.astype(np.float64) - marked.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10.0 * np.log10(255.0**2 / error))


def format_mark_id(mark_id: int) -> str:
    return f"{mark_id:08x}"


@dataclass(frozen=True)
class _Layout:
    """Cell boundaries for one resolution, at full and at texture-sampling resolution."""

    row_counts: NDArray[np.intp]
    col_counts: NDArray[np.intp]
    row_starts: NDArray[np.intp]
    col_starts: NDArray[np.intp]
    # The texture mask is measured on a copy subsampled by `step` (>= 3x3 samples per cell).
    step: int
    sub_row_starts: NDArray[np.intp]
    sub_col_starts: NDArray[np.intp]
    sub_cell_samples: NDArray[np.float32]


def _edges(size: int, cells: int) -> NDArray[np.intp]:
    return np.rint(np.linspace(0, size, cells + 1)).astype(np.intp)


@functools.lru_cache(maxsize=16)
def _layout(height: int, width: int) -> _Layout:
    if height < GRID_H or width < GRID_W:
        raise ValueError(
            f"frame {width}x{height} is too small for the watermark grid (needs at least {GRID_W}x{GRID_H})"
        )
    rows = _edges(height, GRID_H)
    cols = _edges(width, GRID_W)
    step = max(1, min(height // GRID_H, width // GRID_W) // 3)
    # Gradients of the subsampled copy have one sample less per axis.
    sub_h = len(range(0, height, step)) - 1
    sub_w = len(range(0, width, step)) - 1
    sub_rows = np.minimum(rows[:-1] // step, sub_h - 1)
    sub_cols = np.minimum(cols[:-1] // step, sub_w - 1)
    row_span = np.diff(np.append(sub_rows, sub_h))
    col_span = np.diff(np.append(sub_cols, sub_w))
    samples = np.maximum(np.outer(row_span, col_span), 1).astype(np.float32)
    return _Layout(np.diff(rows), np.diff(cols), rows[:-1], cols[:-1], step, sub_rows, sub_cols, samples)


def texture_gain(y: U8, layout: _Layout) -> NDArray[np.float32]:
    """Per-cell embedding gain in [MIN_GAIN, MAX_GAIN] from the cell's mean luma gradient."""
    step = layout.step
    sub = y[::step, ::step].astype(np.int16)
    activity = np.abs(np.diff(sub[:-1], axis=1)) + np.abs(np.diff(sub[:, :-1], axis=0))
    # Columns first: the second reduction then runs on a narrow array. (Not a BLAS product with
    # 0/1 matrices: faster alone, but OpenBLAS worker threads then spin on every core.)
    per_col = np.add.reduceat(activity, layout.sub_col_starts, axis=1, dtype=np.int32)
    per_cell = np.add.reduceat(per_col, layout.sub_row_starts, axis=0, dtype=np.int32)
    # Gradients over `step` pixels are larger than per-pixel ones; compare per pixel.
    gain = per_cell.astype(np.float32) / (layout.sub_cell_samples * (ACTIVITY_REFERENCE * step))
    return np.clip(gain, MIN_GAIN, MAX_GAIN, out=gain)


class Embedder:
    """Embeds one payload on one channel into luma planes in place; caches per resolution.

    `mask_every` recomputes the texture mask every N frames (video-call scenes change slowly
    and the mask is the largest part of the cost).
    """

    def __init__(
        self,
        payload: int,
        *,
        key: bytes = DEFAULT_KEY,
        channel: Channel = Channel.LIVE,
        strength: float = DEFAULT_STRENGTH,
        mask_every: int = 1,
    ) -> None:
        if strength <= 0:
            raise ValueError("watermark strength must be positive")
        self._pattern = pattern(key, channel)
        self._strength = strength
        self._mask_every = max(1, mask_every)
        self._frame = 0
        self._shape: tuple[int, int] | None = None
        self._gain: NDArray[np.float32] | None = None
        # Full-resolution delta planes, rebuilt when the mask or the payload changes.
        self._raise: U8 | None = None
        self._lower: U8 | None = None
        self._ceiling: U8 | None = None
        self.payload = -1
        self.set_payload(payload)

    def set_payload(self, payload: int) -> None:
        if payload == self.payload:
            return
        symbols = encode_payload(payload)
        self._unit = (self._pattern.chips * symbols[self._pattern.symbol_of_cell]).astype(np.float32)
        self.payload = payload
        self._raise = None

    def embed(self, y: U8) -> None:
        height, width = y.shape
        layout = _layout(height, width)
        if self._shape != (height, width):
            self._shape = (height, width)
            self._gain = None
        if self._gain is None or self._frame % self._mask_every == 0:
            self._gain = texture_gain(y, layout)
            self._raise = None
        self._frame += 1
        if self._raise is None:
            self._prepare_delta(layout)
        assert self._raise is not None and self._ceiling is not None and self._lower is not None
        # clip(y + delta, 0, 255) as four in-place uint8 passes over planes prepared once per
        # mask update: a cell's delta has one sign, so the raise and lower passes never mix.
        np.minimum(y, self._ceiling, out=y)
        np.add(y, self._raise, out=y)
        np.maximum(y, self._lower, out=y)
        np.subtract(y, self._lower, out=y)

    def _prepare_delta(self, layout: _Layout) -> None:
        assert self._gain is not None
        cell_delta = np.rint(self._strength * self._gain * self._unit).astype(np.int16)
        np.clip(cell_delta, -255, 255, out=cell_delta)
        raise_cells = np.maximum(cell_delta, 0).astype(np.uint8)
        lower_cells = np.maximum(-cell_delta, 0).astype(np.uint8)
        self._raise = _expand(raise_cells, layout)
        self._lower = _expand(lower_cells, layout)
        self._ceiling = _expand(255 - raise_cells, layout)


def _expand(cells: U8, layout: _Layout) -> U8:
    """Cell values to a full-resolution plane (columns first: the wide repeat runs on few rows)."""
    wide = np.repeat(cells, layout.col_counts, axis=1)
    return np.ascontiguousarray(np.repeat(wide, layout.row_counts, axis=0))


@functools.lru_cache(maxsize=8)
def _embedder(key: bytes, channel: Channel, strength: float) -> Embedder:
    return Embedder(0, key=key, channel=channel, strength=strength)


def embed(
    y_plane: U8,
    payload: int,
    *,
    key: bytes = DEFAULT_KEY,
    channel: Channel = Channel.RECIPIENT,
    strength: float = DEFAULT_STRENGTH,
) -> None:
    """Marks one luma plane in place with `payload` (offline use, e.g. `export --mark-for`).

    Not thread-safe (a cached embedder is reused); live hooks own their `Embedder`.
    """
    embedder = _embedder(key, channel, strength)
    embedder.set_payload(payload)
    embedder.embed(y_plane)


@dataclass(frozen=True)
class ExtractionResult:
    id: int
    channel: Channel
    # Normalised correlation of the soft symbols with the decoded codeword (1.0 = perfect).
    confidence: float
    # Fraction of hard symbol decisions that disagree with the decoded codeword.
    ber_estimate: float
    frames: int

    @property
    def id_hex(self) -> str:
        return format_mark_id(self.id)


def cell_means(y: NDArray[np.uint8], layout: _Layout) -> NDArray[np.float64]:
    per_row = np.add.reduceat(y, layout.row_starts, axis=0, dtype=np.int64)
    per_cell = np.add.reduceat(per_row, layout.col_starts, axis=1, dtype=np.int64)
    result: NDArray[np.float64] = per_cell / np.outer(layout.row_counts, layout.col_counts)
    return result


def cell_residual(means: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each cell minus the mean of its four neighbours: strips the picture, keeps the chips."""
    padded = np.pad(means, 1, mode="edge")
    neighbours = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) / 4.0
    residual: NDArray[np.float64] = means - neighbours
    return residual


class Extractor:
    """Accumulates luma frames (any resolution, any count) and decodes the marks in them."""

    def __init__(self, key: bytes = DEFAULT_KEY, channels: Iterable[Channel] = tuple(Channel)) -> None:
        self._key = key
        self._channels = tuple(channels)
        self.reset()

    def reset(self) -> None:
        self._residual = np.zeros((GRID_H, GRID_W), dtype=np.float64)
        self.frames = 0

    def add(self, y: NDArray[np.uint8]) -> None:
        layout = _layout(*y.shape)
        # Clipping limits what strong edges of the picture (not the mark) contribute.
        self._residual += np.clip(cell_residual(cell_means(y, layout)), -RESIDUAL_CLIP, RESIDUAL_CLIP)
        self.frames += 1

    def soft_symbols(self, channel: Channel) -> NDArray[np.float64]:
        chosen = pattern(self._key, channel)
        weights = (self._residual * chosen.chips).ravel()
        soft = np.bincount(chosen.symbol_of_cell.ravel(), weights=weights, minlength=CODED_BITS)
        return soft.astype(np.float64)

    def decode(self, channel: Channel) -> tuple[ExtractionResult, bool]:
        """The best candidate on `channel` and whether it passes CRC and threshold."""
        soft = self.soft_symbols(channel)
        payload, crc_ok = split_info(viterbi_decode(soft))
        codeword = encode_payload(payload).astype(np.float64)
        norm = float(np.linalg.norm(soft))
        score = float(soft @ codeword) / (norm * float(np.sqrt(CODED_BITS))) if norm > 0 else 0.0
        ber = float(np.mean(np.sign(soft) != codeword))
        result = ExtractionResult(payload, channel, score, ber, self.frames)
        return result, crc_ok and score >= SCORE_THRESHOLD

    def results(self) -> list[ExtractionResult]:
        found = []
        for channel in self._channels:
            result, accepted = self.decode(channel)
            if accepted:
                found.append(result)
        return found


def extract(
    frames_y: Iterable[NDArray[np.uint8]],
    *,
    key: bytes = DEFAULT_KEY,
    channel: Channel = Channel.LIVE,
) -> ExtractionResult | None:
    """Decodes the mark of `channel` from luma planes, or None when no mark is found."""
    extractor = Extractor(key, (channel,))
    for y in frames_y:
        extractor.add(y)
    if extractor.frames == 0:
        return None
    result, accepted = extractor.decode(channel)
    return result if accepted else None
