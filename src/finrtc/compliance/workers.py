"""Recognition worker processes fed through bounded queues.

pocketsphinx holds the GIL while decoding (two decoding threads ran slower than one), so
recognition runs in separate processes. Each worker owns a bounded audio queue; feeding never
waits: when a worker falls behind, the audio is dropped, counted, and the stream's `on_drop`
callback raises the alert. Control messages (open / flush / close) travel on their own queue so
audio backlog never delays them and they are never dropped for lack of room.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from finrtc.compliance.metrics import (
    AUDIO_DROPPED_SECONDS,
    AUDIO_SECONDS,
    CPU_SECONDS,
    DROPS,
    UTTERANCES,
    WORKER_RESTARTS,
)
from finrtc.compliance.recognizer import (
    DEFAULT_MAX_UTTERANCE_S,
    SAMPLE_RATE,
    ModelSpec,
    RecognitionResult,
    Transcribe,
    create_recognizer,
    preload,
)
from finrtc.compliance.worker_protocol import (
    AudioBlock,
    CloseStream,
    ControlRequest,
    FlushStream,
    OpenStream,
    Progress,
    Recognized,
    SetDemand,
    Stats,
    StopWorker,
    StreamClosed,
    StreamFailed,
    StreamFlushed,
    StreamOpened,
    WorkerReply,
)
from finrtc.threads import BACKGROUND_NICE, lower_thread_priority, name_native_thread

log = logging.getLogger(__name__)

# Audio arrives in blocks of about this length (see the audio tap); sizes the queues.
BLOCK_SECONDS = 0.1
CONTROL_QUEUE_SIZE = 1024
# `queue_seconds` is per track; a worker's queue holds that much audio for this many tracks.
QUEUE_TRACKS_PER_WORKER = 32
# The worker reports its progress on a track every this many blocks: the parent counts the
# blocks still waiting per track (it may admit up to this many more than the limit).
PROGRESS_EVERY_BLOCKS = 5
RESULT_QUEUE_SIZE = 1024
STATS_INTERVAL_S = 2.0

ResultCallback = Callable[[RecognitionResult], None]
DropCallback = Callable[[float], None]
FailureCallback = Callable[[str], None]


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """A worker must not outlive its server: after a SIGKILL of the server, orphaned workers
    would keep CPU, memory and the server's stdout/stderr pipes forever."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    # The parent may have died before prctl took effect.
    if os.getppid() != parent or parent == 1:
        os._exit(0)


def _worker_main(
    audio: multiprocessing.Queue[AudioBlock],
    control: multiprocessing.Queue[ControlRequest],
    results: multiprocessing.Queue[WorkerReply],
    nice: int = BACKGROUND_NICE,
    model: ModelSpec | None = None,
    transcribe: Transcribe = "on_demand",
) -> None:
    """The worker process: one recognizer per open stream."""
    _die_with_parent()
    name_native_thread("finrtc-asr")
    # Before any other thread starts (they inherit it): recognition may lag, frames may not.
    lower_thread_priority(nice)
    if model is not None:
        try:
            preload(model, transcribe)
        except Exception:
            # The first stream's open reports the same error to its session.
            log.exception("recognizer worker: the model could not be preloaded")
    recognizers: dict[str, Any] = {}
    slowdowns: dict[str, float] = {}
    # Audio blocks processed per stream; flush / close wait until every block queued before
    # them was processed (they travel on another queue, so they can overtake audio).
    processed: dict[str, int] = {}
    deferred: list[FlushStream | CloseStream] = []
    # Recently closed streams: their straggling audio is dropped at once, not waited for.
    finished: dict[str, None] = {}
    last_stats: dict[str, tuple[float, float, int, int]] = {}
    last_report = time.monotonic()

    def handle_control(message: ControlRequest) -> bool:
        match message:
            case StopWorker():
                return False
            case SetDemand(stream_id, demanded):
                recognizer = recognizers.get(stream_id)
                if recognizer is not None:
                    recognizer.set_demand(demanded)
            case OpenStream() as spec:
                try:
                    recognizers[spec.stream_id] = create_recognizer(
                        spec.stream_id, spec.model, spec.phrases, spec.transcribe,
                        spec.max_utterance_s,
                    )
                    slowdowns[spec.stream_id] = spec.slowdown
                    skipped = recognizers[spec.stream_id].skipped_phrases
                    results.put(StreamOpened(spec.stream_id, tuple(skipped)))
                except Exception as error:
                    finished[spec.stream_id] = None
                    results.put(StreamFailed(spec.stream_id, f"{type(error).__name__}: {error}"))
            case FlushStream(stream_id, blocks_sent) | CloseStream(stream_id, blocks_sent):
                if processed.get(stream_id, 0) < blocks_sent and stream_id in recognizers:
                    deferred.append(message)
                    return True
                recognizer = recognizers.get(stream_id)
                if recognizer is not None:
                    for result in recognizer.flush():
                        results.put(Recognized(result))
                    report_stats(stream_id, recognizer)
                if isinstance(message, CloseStream):
                    finished[stream_id] = None
                    if len(finished) > 4096:
                        del finished[next(iter(finished))]
                    recognizers.pop(stream_id, None)
                    slowdowns.pop(stream_id, None)
                    last_stats.pop(stream_id, None)
                    processed.pop(stream_id, None)
                    results.put(StreamClosed(stream_id))
                else:
                    results.put(StreamFlushed(stream_id))
        return True

    def report_stats(stream_id: str, recognizer: Any) -> None:
        previous = last_stats.get(stream_id, (0.0, 0.0, 0, 0))
        current = (
            recognizer.audio_seconds, recognizer.cpu_seconds,
            recognizer.utterances_decoded, recognizer.utterances_skipped,
        )
        last_stats[stream_id] = current
        if current[0] > previous[0]:
            results.put(
                Stats(
                    stream_id,
                    current[0] - previous[0],
                    current[1] - previous[1],
                    current[2] - previous[2],
                    current[3] - previous[3],
                )
            )

    def drain_control(block: bool) -> bool:
        while True:
            try:
                message = control.get(block=block, timeout=0.05 if block else None)
            except queue.Empty:
                return True
            if not handle_control(message):
                return False
            block = False

    running = True
    while running:
        running = drain_control(block=False)
        if not running:
            break
        try:
            block = audio.get(timeout=0.05)
        except queue.Empty:
            continue
        stream_id = block.stream_id
        recognizer = recognizers.get(stream_id)
        if recognizer is None and stream_id not in finished:
            # The open message may still be in flight on the control queue.
            deadline = time.monotonic() + 2.0
            while recognizer is None and running and time.monotonic() < deadline:
                running = drain_control(block=True)
                recognizer = recognizers.get(stream_id)
        if recognizer is None:
            continue
        done = processed[stream_id] = processed.get(stream_id, 0) + 1
        if done % PROGRESS_EVERY_BLOCKS == 0:
            results.put(Progress(stream_id, done))
        pcm = np.frombuffer(block.pcm, dtype=np.int16)
        for result in recognizer.feed(pcm, block.media_time):
            results.put(Recognized(result))
        slowdown = slowdowns.get(stream_id, 0.0)
        if slowdown:
            # Busy-wait (not sleep) so the worker really is CPU-bound, like a slow model.
            started = time.process_time()
            until = time.perf_counter() + slowdown * len(pcm) / SAMPLE_RATE
            while time.perf_counter() < until:
                pass
            recognizer.cpu_seconds += time.process_time() - started
        ready = [item for item in deferred if processed.get(item.stream_id, 0) >= item.blocks_sent]
        for item in ready:
            deferred.remove(item)
            handle_control(item)
        now = time.monotonic()
        if now - last_report >= STATS_INTERVAL_S:
            last_report = now
            for key, active in recognizers.items():
                report_stats(key, active)


class _Stream:
    def __init__(
        self,
        stream_id: str,
        worker: _Worker,
        spec: OpenStream,
        on_result: ResultCallback,
        on_drop: DropCallback | None,
        on_failure: FailureCallback | None,
    ) -> None:
        self.stream_id = stream_id
        self.worker = worker
        self.spec = spec
        self.on_result = on_result
        self.on_drop = on_drop
        self.on_failure = on_failure
        self.closed = threading.Event()
        self.flushed = threading.Event()
        self.skipped_phrases: list[str] = []
        # Whether the session wants every utterance decoded (resent after a worker restart).
        self.demand = False
        # Audio blocks successfully queued (read by flush / close to keep their order), and
        # how many of them the worker reported processed.
        self.sent = 0
        self.acknowledged = 0
        self.closing = False


class _Worker:
    def __init__(self, context: Any, index: int, audio_blocks: int) -> None:
        self.index = index
        self.audio: multiprocessing.Queue[AudioBlock] = context.Queue(audio_blocks)
        self.control: multiprocessing.Queue[ControlRequest] = context.Queue(CONTROL_QUEUE_SIZE)
        self.process: Any = None
        self.streams: set[str] = set()


class StreamHandle:
    """What an audio tap holds: feed never blocks; flush and close are asynchronous."""

    def __init__(self, pool: RecognizerPool, stream: _Stream) -> None:
        self._pool = pool
        self._stream = stream
        self.stream_id = stream.stream_id

    def feed(self, pcm: bytes, media_time: float) -> bool:
        """Queue 16 kHz mono int16 PCM; False (dropped and counted) when the worker is behind."""
        return self._pool._feed(self._stream, pcm, media_time)

    def flush(self) -> None:
        self._pool._control(self._stream, FlushStream(self.stream_id, self._stream.sent))

    def set_demand(self, demanded: bool) -> None:
        """Ask for every utterance to be decoded (transcribe: on_demand); idempotent."""
        if self._stream.demand != demanded and not self._stream.closing:
            self._stream.demand = demanded
            self._pool._control(self._stream, SetDemand(self.stream_id, demanded))

    def close(self) -> None:
        self._pool._close_stream(self._stream)

    def wait_closed(self, timeout: float) -> bool:
        """Block (off the event loop) until the worker reported the stream's final results."""
        return self._stream.closed.wait(timeout)

    def wait_flushed(self, timeout: float) -> bool:
        return self._stream.flushed.wait(timeout)

    @property
    def skipped_phrases(self) -> list[str]:
        return list(self._stream.skipped_phrases)

    @property
    def demanded(self) -> bool:
        return self._stream.demand


class RecognizerPool:
    """A fixed set of worker processes shared by every stream of the server."""

    def __init__(
        self,
        model: ModelSpec,
        *,
        workers: int = 1,
        queue_seconds: float = 10.0,
        transcribe: Transcribe = "on_demand",
        max_utterance_s: float = DEFAULT_MAX_UTTERANCE_S,
        nice: int = BACKGROUND_NICE,
    ) -> None:
        self.model = model
        self.nice = nice
        self.transcribe = transcribe
        self.max_utterance_s = max_utterance_s
        self._context = multiprocessing.get_context("spawn")
        # Blocks one track may have waiting: a busy track (or a worker busy with other tracks)
        # cannot take the queue space every other track on the worker needs.
        self._track_blocks = max(2, round(queue_seconds / BLOCK_SECONDS))
        self._workers = [
            _Worker(self._context, index, self._track_blocks * QUEUE_TRACKS_PER_WORKER)
            for index in range(workers)
        ]
        self._results: multiprocessing.Queue[WorkerReply] = self._context.Queue(RESULT_QUEUE_SIZE)
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        self._drop_backlog = DROPS.labels(reason="backlog")
        self._drop_down = DROPS.labels(reason="worker_down")
        self._utterances_decoded = UTTERANCES.labels(decoded="true")
        self._utterances_skipped = UTTERANCES.labels(decoded="false")

    @property
    def language(self) -> str:
        return self.model.language

    def start(self) -> None:
        for worker in self._workers:
            self._spawn(worker)
        self._reader = threading.Thread(target=self._read_results, name="compliance-results", daemon=True)
        self._reader.start()

    def _spawn(self, worker: _Worker) -> None:
        worker.process = self._context.Process(
            target=_worker_main,
            args=(
                worker.audio, worker.control, self._results, self.nice, self.model,
                self.transcribe,
            ),
            name=f"finrtc-recognizer-{worker.index}",
            daemon=True,
        )
        worker.process.start()

    def open_stream(
        self,
        label: str,
        phrases: Sequence[str],
        on_result: ResultCallback,
        *,
        on_drop: DropCallback | None = None,
        on_failure: FailureCallback | None = None,
        slowdown: float = 0.0,
        model: ModelSpec | None = None,
    ) -> StreamHandle:
        """Start recognizing one track. Thread-safe and non-blocking (the decoder loads in the
        worker). `model` overrides the pool's model for this stream; `slowdown` exists for
        tests of the back-pressure path."""
        with self._lock:
            stream_id = f"{label}#{next(self._ids)}"
            worker = min(self._workers, key=lambda candidate: len(candidate.streams))
            spec = OpenStream(
                stream_id,
                model or self.model,
                tuple(phrases),
                self.transcribe,
                self.max_utterance_s,
                slowdown,
            )
            stream = _Stream(stream_id, worker, spec, on_result, on_drop, on_failure)
            self._streams[stream_id] = stream
            worker.streams.add(stream_id)
        self._control(stream, spec)
        return StreamHandle(self, stream)

    def _control(self, stream: _Stream, message: ControlRequest) -> None:
        try:
            stream.worker.control.put_nowait(message)
        except queue.Full:
            # 1024 pending control messages means the worker is wedged.
            self._fail(stream, "the recognizer worker does not accept control messages")

    def _feed(self, stream: _Stream, pcm: bytes, media_time: float) -> bool:
        if stream.closing:
            # The session ended before the track: nothing listens any more.
            return False
        seconds = len(pcm) / 2 / SAMPLE_RATE
        process = stream.worker.process
        if process is None or not process.is_alive():
            self._drop_down.inc()
            AUDIO_DROPPED_SECONDS.inc(seconds)
            if stream.on_drop is not None:
                stream.on_drop(seconds)
            return False
        waiting = stream.sent - stream.acknowledged
        if waiting < self._track_blocks + PROGRESS_EVERY_BLOCKS:
            try:
                stream.worker.audio.put_nowait(AudioBlock(stream.stream_id, pcm, media_time))
                stream.sent += 1
                return True
            except queue.Full:
                pass
        self._drop_backlog.inc()
        AUDIO_DROPPED_SECONDS.inc(seconds)
        if stream.on_drop is not None:
            stream.on_drop(seconds)
        return False

    def _close_stream(self, stream: _Stream) -> None:
        if stream.closing:
            return
        stream.closing = True
        self._control(stream, CloseStream(stream.stream_id, stream.sent))

    def _fail(self, stream: _Stream, reason: str) -> None:
        if stream.on_failure is not None:
            stream.on_failure(reason)

    def _forget(self, stream_id: str) -> _Stream | None:
        with self._lock:
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                stream.worker.streams.discard(stream_id)
        return stream

    def _read_results(self) -> None:
        name_native_thread("finrtc-asr-read")
        last_check = time.monotonic()
        while not self._stopping.is_set():
            if time.monotonic() - last_check >= 0.5:
                last_check = time.monotonic()
                self._check_workers()
            try:
                message = self._results.get(timeout=0.25)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            try:
                self._dispatch(message)
            except Exception:
                log.exception("compliance result callback failed")

    def _dispatch(self, message: WorkerReply) -> None:
        match message:
            case Recognized(result):
                stream = self._streams.get(result.stream_id)
                if stream is not None:
                    stream.on_result(result)
            case Progress(stream_id, blocks_processed):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    # A report from a worker that has since been replaced may exceed the count.
                    stream.acknowledged = min(max(stream.acknowledged, blocks_processed), stream.sent)
            case StreamOpened(stream_id, skipped_phrases):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    stream.skipped_phrases = list(skipped_phrases)
            case StreamFailed(stream_id, reason):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    self._fail(stream, f"the recognizer could not start: {reason}")
            case Stats():
                AUDIO_SECONDS.inc(message.audio_seconds)
                CPU_SECONDS.inc(max(0.0, message.cpu_seconds))
                self._utterances_decoded.inc(message.utterances_decoded)
                self._utterances_skipped.inc(message.utterances_skipped)
            case StreamFlushed(stream_id):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    stream.flushed.set()
            case StreamClosed(stream_id):
                stream = self._forget(stream_id)
                if stream is not None:
                    stream.flushed.set()
                    stream.closed.set()

    def _check_workers(self) -> None:
        for worker in self._workers:
            process = worker.process
            if process is None or process.is_alive() or self._stopping.is_set():
                continue
            log.error(
                "recognizer worker %d exited with code %s; restarting it",
                worker.index,
                process.exitcode,
            )
            WORKER_RESTARTS.inc()
            with self._lock:
                affected = [self._streams[key] for key in worker.streams if key in self._streams]
            for stream in affected:
                self._fail(
                    stream,
                    f"the recognizer worker exited (code {process.exitcode}); audio since the "
                    "last result was not recognized",
                )
            self._spawn(worker)
            for stream in affected:
                # The dead worker took its queued blocks with it: restart the count so a later
                # flush / close does not wait for blocks that will never be processed.
                stream.sent = 0
                stream.acknowledged = 0
                self._control(stream, stream.spec)
                if stream.demand:
                    self._control(stream, SetDemand(stream.stream_id, True))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers (blocking: call from a thread or at shutdown)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for worker in self._workers:
            with contextlib.suppress(queue.Full, ValueError, OSError):
                worker.control.put_nowait(StopWorker())
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            if worker.process is None:
                continue
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1.0)
        if self._reader is not None:
            self._reader.join(1.0)
        for worker in self._workers:
            for handle in (worker.audio, worker.control):
                handle.cancel_join_thread()
                handle.close()
        self._results.cancel_join_thread()
        self._results.close()
