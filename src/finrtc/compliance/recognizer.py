"""Speech recognizers: feed 16 kHz mono int16 PCM, get keyword hits and utterance transcripts.

Recognizers run inside worker processes (see `finrtc.compliance.workers`); nothing here touches
the event loop. Backends:

- `pocketsphinx` (default): the en-us model shipped in the pocketsphinx wheel.
- `model_dir`: a model folder named in config together with its expected sha256, described by
  a `finrtc-model.yaml` manifest, for the `pocketsphinx` or the `vosk` engine (Kaldi models,
  e.g. Alpha Cephei's Mandarin vosk-model-small-cn). finrtc bundles and downloads no
  third-party weights.

How pocketsphinx is used, and why: keyphrase spotting (kws) is cheap (~0.02 CPU-s per audio-s)
and detects the script's phrases reliably, but it only ever reports the phrases it was given,
so it cannot see "I have *not* understood". Full decoding with the language model costs about
four times as much but yields the evidence transcript, which the phrase matcher checks (negation
included). A voice-activity endpointer cuts each stream into speech segments (utterances), and
kws runs over those (silence and room noise cannot hold a phrase; on the accuracy corpus the
detections are the same; without transcripts there is no endpointer and kws hears everything).

Which utterances are fully decoded is the `transcribe` mode: `always` decodes every one;
`on_demand` (the default) keeps the utterance's audio and decodes it only when it is needed: kws
spotted a script phrase in it (the transcript then checks for negation), the script has phrases
kws cannot spot (out of vocabulary, or not written in the model's alphabet), or the session
demands it because the speaker owes the next required stage (so a phrase kws missed can still be
found in the transcript). Most of a call is conversation outside the script. Each utterance is
reported once, with its transcript and the keyphrases spotted inside it. (JSGF grammars are not
used: they force every utterance onto a grammar path and turned a negated confirmation into a
match.)
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import Field, ValidationError, model_validator

from finrtc.config_base import StrictModel, format_validation_error
from finrtc.errors import ConfigError

SAMPLE_RATE = 16000
MANIFEST_NAME = "finrtc-model.yaml"
_FRAMES_PER_SECOND = 100  # pocketsphinx's default frame rate
# Speech closer than this to where spotting stopped continues it (positions are rounded seconds).
_CONTIGUOUS_SAMPLES = 16
DEFAULT_MAX_UTTERANCE_S = 15.0
# Decoder settings, measured with benchmarks/speech_accuracy.py (4 flite voices, clean and after
# Opus; CPU-s per audio-s in parentheses).
# Full decoding: the second passes (fwdflat, bestpath) and an uncapped HMM count cost (0.154) for
# 40/40 detections; without them and with at most 5000 active HMMs per frame (0.118) the same
# 40/40 and 0 false alarms on the negated distractors. Narrower beams (1e-40) lost detections.
# Scoring each frame with the 2 best Gaussians of the phonetic tied mixtures instead of 4 cut
# spotting plus full decoding from 0.099 to 0.088, still 40/40 with 0 false alarms.
_LM_DECODER_SETTINGS: dict[str, Any] = {
    "fwdflat": False,
    "bestpath": False,
    "maxhmmpf": 5000,
    "topn": 2,
}

Transcribe = Literal["on_demand", "always", "off"]


@dataclass(frozen=True, slots=True)
class KeywordHit:
    phrase: str
    media_time: float
    end_time: float
    confidence: float


@dataclass(frozen=True, slots=True)
class RecognitionResult:
    """One utterance (or, without transcription, one keyword hit) from one stream."""

    stream_id: str
    # The full-decoding transcript; None when transcription is off or the utterance was not
    # decoded (on demand).
    text: str | None
    keywords: tuple[KeywordHit, ...]
    # Media time of the track (seconds) where the utterance starts / ends.
    start: float
    end: float
    confidence: float
    engine: str
    model_digest: str


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything a worker needs to build a decoder; picklable."""

    engine: Literal["pocketsphinx", "vosk"]
    language: str
    # pocketsphinx: the acoustic model folder; vosk: the Kaldi model folder (am/, conf/, graph/).
    acoustic_model: str
    dictionary: str
    language_model: str | None
    digest: str
    source: str
    extra: dict[str, str] = field(default_factory=dict)


class Recognizer(Protocol):
    engine: str
    model_digest: str

    def feed(self, pcm: NDArray[np.int16], media_time: float) -> list[RecognitionResult]: ...

    def flush(self) -> list[RecognitionResult]: ...


# --- model digests ------------------------------------------------------------------------------


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(root: Path, files: Sequence[Path] | None = None) -> str:
    """sha256 over "relative/path NUL sha256-of-file LF" for every file, sorted by path.

    Stable across copies and machines; any changed, added or removed file changes it.
    """
    root = root.resolve()
    if files is None:
        files = [path for path in root.rglob("*") if path.is_file()]
    lines = []
    for path in files:
        relative = path.resolve().relative_to(root).as_posix()
        lines.append(f"{relative}\0{_file_digest(path)}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


_builtin_cache: ModelSpec | None = None


def builtin_model() -> ModelSpec:
    """The en-us model shipped in the pocketsphinx wheel (digest computed once per process)."""
    global _builtin_cache
    if _builtin_cache is None:
        try:
            import pocketsphinx
        except ImportError:
            raise ConfigError(
                "compliance.recognizer.backend is pocketsphinx but the package is not "
                "installed; install finrtc[speech]"
            ) from None
        base = Path(pocketsphinx.get_model_path()) / "en-us"
        acoustic = base / "en-us"
        dictionary = base / "cmudict-en-us.dict"
        language_model = base / "en-us.lm.bin"
        files = [*sorted(acoustic.iterdir()), dictionary, language_model]
        _builtin_cache = ModelSpec(
            engine="pocketsphinx",
            language="en",
            acoustic_model=str(acoustic),
            dictionary=str(dictionary),
            language_model=str(language_model),
            digest=tree_digest(base, files),
            source="pocketsphinx:en-us",
        )
    return _builtin_cache


class ModelManifest(StrictModel):
    """`finrtc-model.yaml` inside a model folder; paths are relative to that folder."""

    engine: Literal["pocketsphinx", "vosk"]
    # The language the model recognizes (a script in another language is refused).
    language: Literal["en", "zh", "ko"]
    # pocketsphinx: acoustic_model, dictionary and language_model.
    acoustic_model: str | None = None
    dictionary: str | None = None
    language_model: str | None = None
    # vosk: the Kaldi model folder (am/, conf/, graph/); "." when it is the model folder itself.
    model: str | None = None
    description: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _engine_files(self) -> ModelManifest:
        if self.engine == "pocketsphinx" and (not self.acoustic_model or not self.dictionary):
            raise ValueError("engine pocketsphinx needs acoustic_model and dictionary")
        if self.engine == "vosk" and not self.model:
            raise ValueError("engine vosk needs model (the Kaldi model folder)")
        return self


def _inside(root: Path, relative: str, key: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ConfigError(f"{root / MANIFEST_NAME}: {key} must stay inside the model folder")
    if not path.exists():
        raise ConfigError(f"{root / MANIFEST_NAME}: {key} {relative!r} does not exist in {root}")
    return path


def load_model_dir(model_dir: Path, expected_sha256: str | None) -> ModelSpec:
    """Validate a model folder and check it against the configured digest."""
    key = "compliance.recognizer.model_dir"
    if expected_sha256 is None:
        raise ConfigError(
            "compliance.recognizer.model_sha256 is required with backend model_dir: pin the "
            "model you audited (finrtc compliance model-digest DIR prints it)"
        )
    if not re.fullmatch(r"[0-9a-f]{64}", expected_sha256):
        raise ConfigError(
            "compliance.recognizer.model_sha256 must be 64 lowercase hex digits (a sha256)"
        )
    root = model_dir.expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"{key}: {root} is not a folder")
    manifest_path = root / MANIFEST_NAME
    try:
        data: Any = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{key}: {root} has no {MANIFEST_NAME} describing the model "
            "(engine, language, acoustic_model, dictionary, language_model)"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{manifest_path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{manifest_path}: the top level must be a mapping")
    try:
        manifest = ModelManifest.model_validate(data)
    except ValidationError as error:
        details = format_validation_error(error)
        raise ConfigError(f"{manifest_path} is invalid:\n{details}") from None
    if manifest.engine == "vosk":
        assert manifest.model is not None
        acoustic = _inside(root, manifest.model, "model")
        if not (acoustic / "am" / "final.mdl").is_file():
            raise ConfigError(
                f"{manifest_path}: model {manifest.model!r} is not a vosk (Kaldi) model folder: "
                "am/final.mdl is missing"
            )
        dictionary: Path | None = None
        language_model = None
    else:
        assert manifest.acoustic_model is not None and manifest.dictionary is not None
        acoustic = _inside(root, manifest.acoustic_model, "acoustic_model")
        dictionary = _inside(root, manifest.dictionary, "dictionary")
        language_model = (
            _inside(root, manifest.language_model, "language_model")
            if manifest.language_model
            else None
        )
    digest = tree_digest(root)
    if digest != expected_sha256:
        raise ConfigError(
            f"{key}: the model in {root} has sha256 {digest} but "
            f"compliance.recognizer.model_sha256 expects {expected_sha256}; the model files "
            "changed since they were pinned. Restore them or pin the new digest after review."
        )
    return ModelSpec(
        engine=manifest.engine,
        language=manifest.language,
        acoustic_model=str(acoustic),
        dictionary=str(dictionary) if dictionary else "",
        language_model=str(language_model) if language_model else None,
        digest=digest,
        source=f"model_dir:{root}",
    )


class MediaClock:
    """Maps a stream's sample count to the track's media time across gaps left by dropped
    audio: each fed block anchors (stream sample, media time) where it starts."""

    def __init__(self) -> None:
        self._anchors: deque[tuple[int, float]] = deque(maxlen=4096)

    def anchor(self, sample: int, media_time: float) -> None:
        self._anchors.append((sample, media_time))

    def media_time(self, stream_seconds: float) -> float:
        sample = stream_seconds * SAMPLE_RATE
        anchor_sample, anchor_time = self._anchors[0] if self._anchors else (0, 0.0)
        for candidate_sample, candidate_time in reversed(self._anchors):
            if candidate_sample <= sample:
                anchor_sample, anchor_time = candidate_sample, candidate_time
                break
        return anchor_time + (sample - anchor_sample) / SAMPLE_RATE


class FramedRecognizer:
    """Cuts fed PCM into the endpointer's frames for `_process_frame`, keeps the stream clock
    (`_samples`, advanced by `_process_frame`), the media clock and the CPU / audio counters."""

    def _init_frames(self, frame_samples: int) -> None:
        self._frame_samples = frame_samples
        self._pending = np.zeros(0, dtype=np.int16)
        # Samples handed to the decoders so far (the stream clock).
        self._samples = 0
        self._clock = MediaClock()
        self.cpu_seconds = 0.0
        self.audio_seconds = 0.0

    def _process_frame(self, frame: NDArray[np.int16], results: list[RecognitionResult]) -> None:
        raise NotImplementedError

    def feed(self, pcm: NDArray[np.int16], media_time: float) -> list[RecognitionResult]:
        started = time.process_time()
        self._clock.anchor(self._samples + len(self._pending), media_time)
        pending = np.concatenate([self._pending, pcm.astype(np.int16, copy=False)])
        results: list[RecognitionResult] = []
        usable = len(pending) - len(pending) % self._frame_samples
        for offset in range(0, usable, self._frame_samples):
            self._process_frame(pending[offset : offset + self._frame_samples], results)
        self._pending = pending[usable:].copy()
        self.cpu_seconds += time.process_time() - started
        self.audio_seconds += len(pcm) / SAMPLE_RATE
        return results

    def _flush_pending(self, results: list[RecognitionResult]) -> None:
        """The last, partial frame, padded with silence."""
        if len(self._pending):
            frame = np.zeros(self._frame_samples, dtype=np.int16)
            frame[: len(self._pending)] = self._pending
            self._pending = np.zeros(0, dtype=np.int16)
            self._process_frame(frame, results)


# --- pocketsphinx -------------------------------------------------------------------------------

# Decoders shared by every stream of a (worker) process, by model and purpose: the word lookup,
# and the full decoder of `on_demand`, which decodes a whole utterance in one call. The only
# state it carries between utterances is the cepstral mean, which each stream saves and restores
# around its own utterances (batch normalisation over the utterance alone lost words: "and I"
# became "him by" in a negated confirmation after Opus). Building a decoder costs ~0.2 CPU-s and
# ~40-80 MB; per stream that was a start-of-call burst long enough to overflow the audio queue.
# Values: the decoder and its cepstral mean when fresh (where each stream starts).
_SHARED_DECODERS: dict[tuple[str, ...], tuple[Any, str]] = {}


def _decoder_settings(model: ModelSpec) -> dict[str, Any]:
    return {
        "hmm": model.acoustic_model,
        "dict": model.dictionary,
        "samprate": SAMPLE_RATE,
        "loglevel": "FATAL",
    }


def _shared_decoder(purpose: Literal["lookup", "on_demand"], model: ModelSpec) -> tuple[Any, str]:
    """The process's decoder for `purpose` and `model`, with its initial cepstral mean."""
    key = (purpose, model.digest, model.acoustic_model, model.dictionary, model.language_model or "")
    shared = _SHARED_DECODERS.get(key)
    if shared is None:
        import pocketsphinx

        language_model = model.language_model if purpose == "on_demand" else None
        settings = _LM_DECODER_SETTINGS if purpose == "on_demand" else {}
        decoder = pocketsphinx.Decoder(lm=language_model, **_decoder_settings(model), **settings)
        shared = _SHARED_DECODERS[key] = (decoder, decoder.get_cmn())
    return shared


def preload(model: ModelSpec, transcribe: Transcribe) -> None:
    """Build the shared decoders now (a worker's start-up) rather than when a call starts."""
    if model.engine == "vosk":
        from finrtc.compliance.vosk_recognizer import shared_vosk_model

        shared_vosk_model(model)
        return
    _shared_decoder("lookup", model)
    if transcribe == "on_demand" and model.language_model is not None:
        _shared_decoder("on_demand", model)


_KWS_WORD = re.compile(r"[a-z0-9']+")


def keyphrase_threshold(words: int) -> float:
    """Detection threshold for a keyphrase of `words` words (longer phrases need lower ones).

    Tuned with benchmarks/speech_accuracy.py on flite voices, clean and after Opus.
    """
    # 1e-15 for three words: at 1e-20 "my game is" already fired for "my name is" after Opus.
    return 10.0 ** -(5 * min(max(words, 2), 8))


def keyphrase_words(phrase: str) -> list[str]:
    return _KWS_WORD.findall(phrase.lower().replace("\u2019", "'"))


class PocketsphinxRecognizer(FramedRecognizer):
    """Keyphrase spotting over all audio plus full decoding of each speech segment."""

    engine = "pocketsphinx"

    def __init__(
        self,
        stream_id: str,
        model: ModelSpec,
        phrases: Sequence[str],
        *,
        transcribe: Transcribe = "on_demand",
        max_utterance_s: float = DEFAULT_MAX_UTTERANCE_S,
    ) -> None:
        import pocketsphinx

        self.stream_id = stream_id
        self.model_digest = model.digest
        self.transcribe = transcribe
        self.on_demand = transcribe == "on_demand"
        # Set by the session while the speaker owes the next required stage (on_demand only).
        self.demand = False
        self._utterance_demanded = False
        # The open utterance's speech, kept until it ends and is decoded or dropped (on_demand).
        self._speech: list[bytes] = []
        self.utterances_decoded = 0
        self.utterances_skipped = 0
        # A speech segment longer than this is decoded in pieces. Without the cap, a monologue
        # or a noisy line the endpointer takes for speech is one endless utterance whose search
        # memory and per-frame cost keep growing (measured: 0.6 CPU-s per audio-s and +40 MB
        # after two minutes of continuous voice-like sound).
        self.max_utterance_s = max_utterance_s
        # The open utterance: where it starts (stream seconds) and the samples decoded so far;
        # where the last one ended, and whether its speech segment was cut and continues.
        self._utterance_start = 0.0
        self._lm_samples = 0
        self._utterance_end = 0.0
        self._split = False
        common = _decoder_settings(model)
        self._kws: Any = None
        self.keyphrases: dict[str, str] = {}
        self.skipped_phrases: list[str] = []
        entries = []
        for phrase in phrases:
            words = keyphrase_words(phrase)
            if not words:
                # Not in the model's alphabet (e.g. Chinese characters): transcript only.
                self.skipped_phrases.append(phrase)
                continue
            lookup, _ = _shared_decoder("lookup", model)
            if any(lookup.lookup_word(word) is None for word in words):
                # Out-of-vocabulary phrases can only be found in the transcript.
                self.skipped_phrases.append(phrase)
                continue
            spoken = " ".join(words)
            self.keyphrases.setdefault(spoken, phrase)
            entries.append(f"{spoken} /{keyphrase_threshold(len(words)):.0e}/\n")
        if entries:
            with tempfile.NamedTemporaryFile(
                "w", suffix=".kws", delete=False, encoding="utf-8"
            ) as handle:
                handle.writelines(dict.fromkeys(entries))
            try:
                # pocketsphinx's default scoring: topn 2 lost 2 detections, and scoring every
                # other frame (ds 2) lost 3 of 5 back-to-back repetitions of a phrase.
                self._kws = pocketsphinx.Decoder(kws=handle.name, lm=None, **common)
            finally:
                os.unlink(handle.name)
            self._kws.start_utt()
        self._lm: Any = None
        self._cmn = ""
        self._endpointer: Any = None
        # Phrases only the transcript can find: on demand must then decode every utterance.
        self.transcript_only = bool(self.skipped_phrases)
        if transcribe != "off":
            if model.language_model is None:
                raise ConfigError(
                    f"model {model.source} has no language_model, so it cannot transcribe"
                )
            if self.on_demand:
                self._lm, self._cmn = _shared_decoder("on_demand", model)
            else:
                # Decodes live, as speech arrives: one per stream.
                self._lm = pocketsphinx.Decoder(
                    lm=model.language_model, **common, **_LM_DECODER_SETTINGS
                )
            self._endpointer = pocketsphinx.Endpointer(sample_rate=SAMPLE_RATE)
        frame_samples = (
            self._endpointer.frame_bytes // 2 if self._endpointer is not None else 480
        )
        self._init_frames(int(frame_samples))
        self._kws_utt_start = 0
        # Stream sample the spotter expects next; anything else starts a new spotting utterance.
        self._kws_next = 0
        # The last second of raw frames (stream sample, bytes): after a speech segment ends, the
        # spotter also hears the audio the endpointer held back to decide it had ended - a phrase
        # is only reported some frames after its last word.
        self._recent: deque[tuple[int, bytes]] = deque(maxlen=40)
        self._hits: list[KeywordHit] = []

    def _media_time(self, stream_seconds: float) -> float:
        return self._clock.media_time(stream_seconds)

    def flush(self) -> list[RecognitionResult]:
        """End of stream: pad the last frame, close the open utterance, report everything."""
        started = time.process_time()
        results: list[RecognitionResult] = []
        self._flush_pending(results)
        if self._lm is not None and self._endpointer is not None:
            speech = self._endpointer.end_stream(bytes(self._endpointer.frame_bytes))
            if speech is not None:
                if not self._in_utterance:
                    self._start_utterance(self._segment_start())
                self._spot(speech, self._utterance_position())
                self._decode(speech)
            self._spot_tail()
            if self._in_utterance:
                self._finish_utterance(self._utterance_start, self._samples / SAMPLE_RATE, results)
            # The stream is over: the endpointer's clock cannot be restarted consistently.
            self._endpointer = None
            self._lm = None
        if self._kws is not None:
            # kws results must be read before end_utt (it clears them in kws mode).
            if self._kws.hyp() is not None:
                self._collect_kws_hit()
            self._restart_kws(self._kws_next)
        self._release_hits(results, everything=True)
        self.cpu_seconds += time.process_time() - started
        return results

    _in_utterance = False

    def _process_frame(self, frame: NDArray[np.int16], results: list[RecognitionResult]) -> None:
        data = frame.tobytes()
        if self._endpointer is None or self._lm is None:
            # Spotting only: over all audio.
            self._spot(data, self._samples)
            self._samples += len(frame)
            self._release_hits(results, everything=True)
            return
        self._recent.append((self._samples, data))
        self._samples += len(frame)
        speech = self._endpointer.process(data)
        if speech is not None:
            if not self._in_utterance:
                self._start_utterance(self._segment_start())
            # With an endpointer, spotting sees the speech segments only (with the endpointer's
            # padding): silence and room noise cannot contain a phrase, and in a call they are
            # over half of each track.
            self._spot(speech, self._utterance_position())
            self._decode(speech)
            if not self._endpointer.in_speech:
                self._spot_tail()
                self._finish_utterance(self._utterance_start, self._endpointer.speech_end, results)
                self._split = False
            else:
                # The endpointer hands out speech with a fixed delay: the decoded audio ends here.
                decoded_until = self._utterance_start + self._lm_samples / SAMPLE_RATE
                if decoded_until - self._utterance_start >= self.max_utterance_s:
                    self._finish_utterance(self._utterance_start, decoded_until, results)
                    self._split = True
        elif not self._endpointer.in_speech and not self._in_utterance:
            # Keyword hits outside any speech segment the endpointer saw: report them alone
            # once they are old enough that no segment can still claim them.
            horizon = self._samples / SAMPLE_RATE - 1.0
            self._release_hits(results, before=self._media_time(horizon))

    def _utterance_position(self) -> int:
        """Stream sample where the next speech of the open utterance starts."""
        return round(self._utterance_start * SAMPLE_RATE) + self._lm_samples

    def _spot(self, data: bytes, position: int) -> None:
        """Keyphrase spotting of `data`, which starts at stream sample `position`."""
        if self._kws is None:
            return
        if abs(position - self._kws_next) > _CONTIGUOUS_SAMPLES:
            # A new speech segment: the spotter's timeline restarts where it begins.
            self._restart_kws(position)
        self._kws.process_raw(data)
        self._kws_next += len(data) // 2
        if self._kws.hyp() is not None:
            self._collect_kws_hit()
            self._restart_kws(self._kws_next)

    def _spot_tail(self) -> None:
        for position, data in self._recent:
            if position >= self._kws_next - _CONTIGUOUS_SAMPLES:
                self._spot(data, position)

    def _restart_kws(self, position: int) -> None:
        self._kws.end_utt()
        self._kws.start_utt()
        self._kws_utt_start = position
        self._kws_next = position

    def _collect_kws_hit(self) -> None:
        for segment in self._kws.seg() or ():
            spoken = " ".join(segment.word.split())
            phrase = self.keyphrases.get(spoken)
            if phrase is None:
                continue
            start = self._kws_utt_start / SAMPLE_RATE + segment.start_frame / _FRAMES_PER_SECOND
            end = self._kws_utt_start / SAMPLE_RATE + segment.end_frame / _FRAMES_PER_SECOND
            confidence = float(min(1.0, max(0.0, segment.prob)))
            self._hits.append(
                KeywordHit(phrase, self._media_time(start), self._media_time(end), confidence)
            )

    def _segment_start(self) -> float:
        """A new segment starts where the endpointer says; the rest of a cut one where the
        previous piece ended."""
        return self._utterance_end if self._split else float(self._endpointer.speech_start)

    def set_demand(self, demanded: bool) -> None:
        """Decode every utterance while `demanded` (on_demand mode); an utterance under way
        when demand starts is decoded too."""
        self.demand = demanded
        if demanded and self._in_utterance:
            self._utterance_demanded = True

    def _start_utterance(self, start_s: float) -> None:
        if not self.on_demand:
            self._lm.start_utt()
        self._in_utterance = True
        self._utterance_demanded = self.demand
        self._utterance_start = start_s
        self._lm_samples = 0

    def _decode(self, speech: bytes) -> None:
        if self.on_demand:
            # Bounded: an utterance is cut at max_utterance_s.
            self._speech.append(speech)
        else:
            self._lm.process_raw(speech)
        self._lm_samples += len(speech) // 2

    def _finish_utterance(
        self, start_s: float, end_s: float, results: list[RecognitionResult]
    ) -> None:
        self._in_utterance = False
        self._utterance_end = end_s
        start, end = self._media_time(start_s), self._media_time(end_s)
        margin = 0.5
        inside = tuple(
            hit for hit in self._hits if start - margin <= hit.media_time <= end + margin
        )
        self._hits = [hit for hit in self._hits if hit not in inside]
        if self.on_demand:
            speech = b"".join(self._speech)
            self._speech = []
            if not (inside or self._utterance_demanded or self.transcript_only):
                self.utterances_skipped += 1
                return
            # The same settings as `always`, fed in one go to the process's shared decoder, with
            # this stream's cepstral mean.
            self._lm.set_cmn(self._cmn)
            self._lm.start_utt()
            self._lm.process_raw(speech)
        self._lm.end_utt()
        if self.on_demand:
            self._cmn = self._lm.get_cmn()
        self.utterances_decoded += 1
        hypothesis = self._lm.hyp()
        text = hypothesis.hypstr.strip() if hypothesis is not None else ""
        confidence = float(min(1.0, max(0.0, hypothesis.prob))) if hypothesis is not None else 0.0
        if not text and not inside:
            return
        results.append(
            RecognitionResult(
                self.stream_id, text, inside, start, end, confidence, self.engine,
                self.model_digest,
            )
        )

    def _release_hits(
        self,
        results: list[RecognitionResult],
        *,
        everything: bool = False,
        before: float | None = None,
    ) -> None:
        keep: list[KeywordHit] = []
        for hit in self._hits:
            if everything or (before is not None and hit.end_time < before):
                results.append(
                    RecognitionResult(
                        self.stream_id, None, (hit,), hit.media_time,
                        hit.end_time, hit.confidence, self.engine, self.model_digest,
                    )
                )
            else:
                keep.append(hit)
        self._hits = keep


class StreamRecognizer(Recognizer, Protocol):
    """What a worker process drives: a recognizer plus the counters it reports."""

    skipped_phrases: list[str]
    audio_seconds: float
    cpu_seconds: float
    utterances_decoded: int
    utterances_skipped: int

    def set_demand(self, demanded: bool) -> None: ...


def create_recognizer(
    stream_id: str,
    model: ModelSpec,
    phrases: Sequence[str],
    transcribe: Transcribe,
    max_utterance_s: float = DEFAULT_MAX_UTTERANCE_S,
) -> StreamRecognizer:
    if model.engine == "pocketsphinx":
        return PocketsphinxRecognizer(
            stream_id, model, phrases, transcribe=transcribe, max_utterance_s=max_utterance_s
        )
    if model.engine == "vosk":
        from finrtc.compliance.vosk_recognizer import VoskRecognizer

        return VoskRecognizer(
            stream_id, model, transcribe=transcribe, max_utterance_s=max_utterance_s
        )
    raise ConfigError(f"recognizer engine {model.engine!r} is not available in this build")
