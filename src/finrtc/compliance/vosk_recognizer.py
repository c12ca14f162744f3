"""The vosk engine: Kaldi models for the languages pocketsphinx has no model for (Mandarin).

A `model_dir` whose `finrtc-model.yaml` says `engine: vosk` names a Kaldi model folder, e.g.
Alpha Cephei's vosk-model-small-cn-0.22 (Apache-2.0, 42 MB). finrtc ships no such model: the
operator places the audited folder and pins its sha256 (see docs/compliance.md).

Vosk has no cheap keyphrase pass to decide which utterances are worth decoding, so every speech
segment found by the voice-activity endpointer is decoded (on_demand behaves as always; off is
refused: without a transcript nothing could be matched). Silence and room noise are never
decoded, and a segment longer than `max_utterance_s` is cut so one decoding stays bounded. The
phrase matcher then checks each transcript, negation included ("我不同意").
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from finrtc.compliance.matcher import is_cjk
from finrtc.compliance.recognizer import (
    DEFAULT_MAX_UTTERANCE_S,
    SAMPLE_RATE,
    FramedRecognizer,
    ModelSpec,
    RecognitionResult,
    Transcribe,
)
from finrtc.errors import ConfigError

# One loaded model per (worker) process, shared by its streams: loading costs seconds and
# hundreds of MB, a recognizer on it ~0.1 CPU-s.
_SHARED_MODELS: dict[tuple[str, str], Any] = {}


def shared_vosk_model(model: ModelSpec) -> Any:
    key = (model.digest, model.acoustic_model)
    loaded = _SHARED_MODELS.get(key)
    if loaded is None:
        try:
            import vosk
        except ImportError:
            raise ConfigError(
                f"model {model.source} needs the vosk engine, which is not installed; "
                "install finrtc[vosk]"
            ) from None
        vosk.SetLogLevel(-1)
        loaded = _SHARED_MODELS[key] = vosk.Model(model.acoustic_model)
    return loaded


def join_words(words: list[str]) -> str:
    """Kaldi models output words separated by spaces; Chinese is written without them (the
    matcher reads runs of characters, so 了 解 must become 了解)."""
    text = ""
    for word in words:
        if text and not (is_cjk(text[-1]) and is_cjk(word[0])):
            text += " "
        text += word
    return text


class VoskRecognizer(FramedRecognizer):
    """Full decoding of every speech segment of one stream."""

    engine = "vosk"

    def __init__(
        self,
        stream_id: str,
        model: ModelSpec,
        *,
        transcribe: Transcribe = "on_demand",
        max_utterance_s: float = DEFAULT_MAX_UTTERANCE_S,
    ) -> None:
        if transcribe == "off":
            raise ConfigError(
                "compliance.recognizer.transcribe: off needs keyphrase spotting, which the vosk "
                "engine does not have; use on_demand or always"
            )
        import pocketsphinx
        import vosk

        self.stream_id = stream_id
        self.model_digest = model.digest
        self.max_utterance_s = max_utterance_s
        # Every phrase is looked for in the transcript: none is skipped, and demand (which
        # asks for every utterance to be decoded) changes nothing.
        self.skipped_phrases: list[str] = []
        self.demand = False
        self.utterances_decoded = 0
        self.utterances_skipped = 0
        self._decoder: Any = vosk.KaldiRecognizer(shared_vosk_model(model), SAMPLE_RATE)
        self._decoder.SetWords(True)
        self._endpointer_type: Any = pocketsphinx.Endpointer
        self._endpointer: Any = self._endpointer_type(sample_rate=SAMPLE_RATE)
        # Stream seconds where the current endpointer's clock started (a flush restarts it).
        self._endpointer_offset = 0.0
        self._init_frames(int(self._endpointer.frame_bytes // 2))
        self._in_utterance = False
        self._utterance_start = 0.0
        self._utterance_samples = 0
        # Words of the open utterance that vosk already finalised (at its own endpoints).
        self._words: list[dict[str, Any]] = []
        # Whether the previous utterance was cut at max_utterance_s (and where), so the rest
        # of its speech segment starts there.
        self._split = False
        self._utterance_end = 0.0

    def set_demand(self, demanded: bool) -> None:
        self.demand = demanded

    def flush(self) -> list[RecognitionResult]:
        """Pad the last frame and close the open utterance; the stream may continue after."""
        started = time.process_time()
        results: list[RecognitionResult] = []
        self._flush_pending(results)
        speech = self._endpointer.end_stream(bytes(self._endpointer.frame_bytes))
        if speech is not None:
            self._accept(speech)
        if self._in_utterance:
            self._finish(self._samples / SAMPLE_RATE, results)
        # The endpointer's clock cannot be restarted: a new one counts from here.
        self._endpointer = self._endpointer_type(sample_rate=SAMPLE_RATE)
        self._endpointer_offset = self._samples / SAMPLE_RATE
        self._split = False
        self.cpu_seconds += time.process_time() - started
        return results

    def _process_frame(self, frame: NDArray[np.int16], results: list[RecognitionResult]) -> None:
        self._samples += len(frame)
        speech = self._endpointer.process(frame.tobytes())
        if speech is None:
            return
        self._accept(speech)
        if not self._endpointer.in_speech:
            self._finish(self._endpointer_offset + self._endpointer.speech_end, results)
            self._split = False
        elif self._utterance_samples / SAMPLE_RATE >= self.max_utterance_s:
            self._finish(self._utterance_start + self._utterance_samples / SAMPLE_RATE, results)
            self._split = True

    def _accept(self, speech: bytes) -> None:
        if not self._in_utterance:
            self._in_utterance = True
            self._utterance_start = (
                self._utterance_end
                if self._split
                else self._endpointer_offset + self._endpointer.speech_start
            )
            self._utterance_samples = 0
            self._words = []
        if self._decoder.AcceptWaveform(speech):
            # Vosk's own endpoint inside our segment: its words must be read now.
            self._words += json.loads(self._decoder.Result()).get("result", [])
        self._utterance_samples += len(speech) // 2

    def _finish(self, end_s: float, results: list[RecognitionResult]) -> None:
        self._in_utterance = False
        self._utterance_end = end_s
        self._words += json.loads(self._decoder.FinalResult()).get("result", [])
        self.utterances_decoded += 1
        words = [str(entry.get("word", "")) for entry in self._words if entry.get("word")]
        if not words:
            return
        confidences = [float(entry.get("conf", 0.0)) for entry in self._words]
        results.append(
            RecognitionResult(
                self.stream_id,
                join_words(words),
                (),
                self._clock.media_time(self._utterance_start),
                self._clock.media_time(end_s),
                float(min(1.0, max(0.0, sum(confidences) / len(confidences)))),
                self.engine,
                self.model_digest,
            )
        )
