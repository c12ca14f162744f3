"""The messages between the server and its recognizer worker processes.

Three queues per worker: audio blocks (bounded, dropped when full), control requests (never
dropped, so audio backlog cannot delay them) and one reply queue shared by every worker. Every
message is a small frozen dataclass; they cross the process boundary pickled.
"""

from __future__ import annotations

from dataclasses import dataclass

from finrtc.compliance.recognizer import ModelSpec, RecognitionResult, Transcribe

# --- server -> worker -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """16 kHz mono int16 PCM of one stream, starting at `media_time` (track seconds)."""

    stream_id: str
    pcm: bytes
    media_time: float


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Build a recognizer for a new stream (also resent after a worker restart)."""

    stream_id: str
    model: ModelSpec
    phrases: tuple[str, ...]
    transcribe: Transcribe
    max_utterance_s: float
    # A test hook: seconds of extra CPU work per second of audio (0 in production).
    slowdown: float


@dataclass(frozen=True, slots=True)
class FlushStream:
    """Report everything recognized so far, once the first `blocks_sent` blocks are processed
    (control travels on its own queue and can overtake audio)."""

    stream_id: str
    blocks_sent: int


@dataclass(frozen=True, slots=True)
class CloseStream:
    """Flush, then drop the stream's recognizer; later audio of the stream is discarded."""

    stream_id: str
    blocks_sent: int


@dataclass(frozen=True, slots=True)
class SetDemand:
    """Decode every utterance while `demanded` (transcribe: on_demand)."""

    stream_id: str
    demanded: bool


@dataclass(frozen=True, slots=True)
class StopWorker:
    """End the worker process."""


ControlRequest = OpenStream | FlushStream | CloseStream | SetDemand | StopWorker

# --- worker -> server -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamOpened:
    stream_id: str
    # Script phrases the spotter cannot look for (only the transcript can find them).
    skipped_phrases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StreamFailed:
    stream_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Recognized:
    result: RecognitionResult


@dataclass(frozen=True, slots=True)
class Progress:
    """The worker has processed this many of the stream's audio blocks."""

    stream_id: str
    blocks_processed: int


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts since the stream's previous report (for the Prometheus counters)."""

    stream_id: str
    audio_seconds: float
    cpu_seconds: float
    utterances_decoded: int
    utterances_skipped: int


@dataclass(frozen=True, slots=True)
class StreamFlushed:
    stream_id: str


@dataclass(frozen=True, slots=True)
class StreamClosed:
    stream_id: str


WorkerReply = (
    StreamOpened | StreamFailed | Recognized | Progress | Stats | StreamFlushed | StreamClosed
)
