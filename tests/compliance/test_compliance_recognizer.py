"""Recognizer backends: pocketsphinx on flite speech, the model_dir folder and its digest."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest

from finrtc.compliance.recognizer import (
    MANIFEST_NAME,
    PocketsphinxRecognizer,
    RecognitionResult,
    builtin_model,
    load_model_dir,
    tree_digest,
)
from finrtc.compliance.runtime import ComplianceRuntime, load_model
from finrtc.compliance.settings import ComplianceConfig, RecognizerConfig
from finrtc.compliance.testing import silence, synthesize
from finrtc.config import LoadedConfig, parse_config
from finrtc.errors import ConfigError


def feed_blocks(
    recognizer: PocketsphinxRecognizer,
    audio: np.ndarray,
    start: float = 0.0,
    demand_from: float | None = None,
) -> list[RecognitionResult]:
    """Feeds 100 ms blocks stamped from `start`, then flushes; demand is set from `demand_from`."""
    results: list[RecognitionResult] = []
    for offset in range(0, len(audio), 1600):
        if demand_from is not None and offset / 16000 >= demand_from:
            recognizer.set_demand(True)
        results += recognizer.feed(audio[offset : offset + 1600], start + offset / 16000)
    return results + recognizer.flush()


def test_pocketsphinx_spots_and_transcribes_with_media_time(tmp_path: Path) -> None:
    model = builtin_model()
    recognizer = PocketsphinxRecognizer(
        "s", model, ["I have understood and I agree", "qwzx unknownword"], transcribe="always"
    )
    assert recognizer.skipped_phrases == ["qwzx unknownword"]
    audio = np.concatenate([
        silence(0.5), synthesize("I have not understood and I do not agree.", tmp_path, "rms"),
        silence(1.0), synthesize("I have understood and I agree.", tmp_path, "rms"), silence(1.0),
    ])
    results = feed_blocks(recognizer, audio, start=100.0)
    texts = [result.text for result in results]
    assert any(text and "not" in text for text in texts), texts
    hits = [hit for result in results for hit in result.keywords]
    assert [hit.phrase for hit in hits] == ["I have understood and I agree"]
    negated_end = 0.5 + 2.5
    assert hits[0].media_time > 100.0 + negated_end
    assert 0.0 < hits[0].confidence <= 1.0
    assert all(result.model_digest == model.digest for result in results)
    assert recognizer.audio_seconds == pytest.approx(len(audio) / 16000)
    # Keyword spotting and decoding of speech only: far cheaper than real time.
    assert recognizer.cpu_seconds < recognizer.audio_seconds


def test_spotting_only_mode_reports_hits_without_transcript(tmp_path: Path) -> None:
    recognizer = PocketsphinxRecognizer(
        "s", builtin_model(), ["returns are not guaranteed"], transcribe="off"
    )
    audio = np.concatenate([
        silence(0.3), synthesize("Returns are not guaranteed.", tmp_path), silence(0.5)
    ])
    results = recognizer.feed(audio, 0.0) + recognizer.flush()
    assert [(r.text, [h.phrase for h in r.keywords]) for r in results] == [
        (None, ["returns are not guaranteed"])
    ]


def make_model_dir(tmp_path: Path) -> Path:
    """A model folder with the layout and manifest model_dir expects (a copy of en-us)."""
    source = Path(builtin_model().acoustic_model).parent
    folder = tmp_path / "model"
    shutil.copytree(source / "en-us", folder / "acoustic")
    shutil.copy(source / "cmudict-en-us.dict", folder / "words.dict")
    (folder / MANIFEST_NAME).write_text(
        "engine: pocketsphinx\nlanguage: en\nacoustic_model: acoustic\ndictionary: words.dict\n",
        encoding="utf-8",
    )
    return folder


def test_model_dir_loads_and_checks_its_digest(tmp_path: Path) -> None:
    folder = make_model_dir(tmp_path)
    digest = tree_digest(folder)
    spec = load_model_dir(folder, digest)
    assert spec.digest == digest and spec.language == "en" and spec.language_model is None
    assert spec.source == f"model_dir:{folder.resolve()}"
    # Without a language model it can still spot keyphrases.
    recognizer = PocketsphinxRecognizer("s", spec, ["my name is"], transcribe="off")
    audio = np.concatenate([silence(0.3), synthesize("My name is Alice.", tmp_path), silence(0.5)])
    results = recognizer.feed(audio, 0.0) + recognizer.flush()
    assert [hit.phrase for r in results for hit in r.keywords] == ["my name is"]
    assert results[0].model_digest == digest
    with pytest.raises(ConfigError, match="has no language_model"):
        PocketsphinxRecognizer("s", spec, ["my name is"], transcribe="on_demand")

    # One changed byte anywhere changes the digest.
    with (folder / "words.dict").open("a", encoding="utf-8") as handle:
        handle.write("finrtc F IH N\n")
    with pytest.raises(ConfigError, match="model_sha256 expects"):
        load_model_dir(folder, digest)


def test_model_dir_errors_are_actionable(tmp_path: Path) -> None:
    folder = make_model_dir(tmp_path)
    digest = tree_digest(folder)
    with pytest.raises(ConfigError, match="model_sha256 is required"):
        load_model_dir(folder, None)
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        load_model_dir(folder, "abc")
    with pytest.raises(ConfigError, match="is not a folder"):
        load_model_dir(tmp_path / "nope", digest)
    manifest = folder / MANIFEST_NAME
    manifest.write_text("engine: whisper\nlanguage: zh\nacoustic_model: a\ndictionary: b\n")
    with pytest.raises(ConfigError, match=r"engine:"):
        load_model_dir(folder, digest)
    manifest.write_text(
        "engine: pocketsphinx\nlanguage: en\nacoustic_model: ../../etc\ndictionary: words.dict\n"
    )
    with pytest.raises(ConfigError, match="inside the model folder"):
        load_model_dir(folder, digest)
    manifest.write_text(
        "engine: pocketsphinx\nlanguage: en\nacoustic_model: missing\ndictionary: words.dict\n"
    )
    with pytest.raises(ConfigError, match="'missing' does not exist"):
        load_model_dir(folder, digest)
    manifest.unlink()
    with pytest.raises(ConfigError, match=f"has no {MANIFEST_NAME}"):
        load_model_dir(folder, digest)


def test_config_plumbing_for_model_dir(tmp_path: Path) -> None:
    folder = make_model_dir(tmp_path)
    digest = tree_digest(folder)
    config = ComplianceConfig(
        recognizer=RecognizerConfig(backend="model_dir", model_dir="model", model_sha256=digest)
    )
    assert load_model(config, tmp_path).digest == digest
    with pytest.raises(ConfigError, match="model_dir is required"):
        load_model(ComplianceConfig(recognizer=RecognizerConfig(backend="model_dir")), tmp_path)
    assert load_model(ComplianceConfig(), None) is builtin_model()


def test_runtime_validates_scripts_language_and_policy(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    config_path = tmp_path / "finrtc.yaml"
    config_path.write_text("", encoding="utf-8")
    shutil.copy(repo / "configs/scripts/bank_insurance_zh.yaml", tmp_path / "zh.yaml")

    def loaded(data: dict[str, object]) -> LoadedConfig:
        return LoadedConfig(parse_config(data), dev_mode=False, source=config_path, api_secret="x")

    runtime = ComplianceRuntime.from_config(
        loaded({"compliance": {"scripts": {"demo": "builtin:demo_insurance_en"}},
                "rooms": {"default_policy": {"script": "demo"}}})
    )
    assert runtime is not None and runtime.scripts["demo"].name == "demo_insurance_en"
    with pytest.raises(ConfigError, match="recognizes 'en'"):
        ComplianceRuntime.from_config(loaded({"compliance": {"scripts": {"zh": "zh.yaml"}}}))
    with pytest.raises(ConfigError, match=r"rooms.default_policy.script: unknown script 'x'"):
        ComplianceRuntime.from_config(loaded({"rooms": {"default_policy": {"script": "x"}}}))
    assert ComplianceRuntime.from_config(loaded({"compliance": {"enabled": False}})) is None


def test_endless_speech_is_transcribed_in_bounded_pieces(tmp_path: Path) -> None:
    # Sentences back to back without pauses: one speech segment for the endpointer, which
    # without the cap would be one ever-growing decoding.
    sentence = synthesize("The value of your policy can go down as well as up.", tmp_path, "slt")
    audio = np.concatenate([silence(0.5), *[sentence] * 5, silence(1.0)])
    recognizer = PocketsphinxRecognizer(
        "s", builtin_model(), ["go down as well as up"], transcribe="always", max_utterance_s=4.0
    )
    results = feed_blocks(recognizer, audio)
    transcribed = [result for result in results if result.text]
    assert len(transcribed) >= 3, [(r.start, r.end, r.text) for r in results]
    assert all(result.end - result.start <= 4.0 + 0.05 for result in transcribed)
    # Pieces follow each other in media time without overlapping.
    for earlier, later in itertools.pairwise(transcribed):
        assert later.start >= earlier.end - 0.05, (earlier, later)
    # Keyphrase spotting runs across the cuts: every repetition is spotted.
    hits = [hit for result in results for hit in result.keywords]
    assert len(hits) >= 4


def test_on_demand_decodes_only_utterances_that_matter(tmp_path: Path) -> None:
    lines = [
        "The weather is nice today.",
        "Please note that returns are not guaranteed.",
        "Could you repeat the last part please?",
        "My game is to win.",
    ]
    parts = [silence(0.5)]
    for line in lines:
        parts += [synthesize(line, tmp_path, "slt"), silence(1.2)]
    audio = np.concatenate(parts)
    # Demand starts in the pause before the fourth line, once the third has ended.
    demand_from = 0.5 + sum(len(part) for part in parts[1:7]) / 16000 - 0.3
    phrases = ["returns are not guaranteed"]

    always = PocketsphinxRecognizer("s", builtin_model(), phrases, transcribe="always")
    always_results = feed_blocks(always, audio)
    assert always.utterances_decoded == 4 and always.utterances_skipped == 0
    assert len([result for result in always_results if result.text]) == 4

    on_demand = PocketsphinxRecognizer("s", builtin_model(), phrases, transcribe="on_demand")
    results = feed_blocks(on_demand, audio, demand_from=demand_from)
    # Decoded: the utterance with the spotted phrase (its transcript shows no negation of it)
    # and the one spoken while the session demanded transcripts; the others only spotted.
    assert on_demand.utterances_decoded == 2 and on_demand.utterances_skipped == 2
    transcribed = [result for result in results if result.text]
    assert len(transcribed) == 2, [(r.start, r.text) for r in results]
    assert [hit.phrase for hit in transcribed[0].keywords] == phrases
    assert "guaranteed" in (transcribed[0].text or "")
    assert transcribed[1].start > demand_from - 0.5 and not transcribed[1].keywords
    # The spotted utterance is timed like in `always` mode.
    spotted = next(result for result in always_results if result.keywords)
    assert transcribed[0].start == pytest.approx(spotted.start, abs=0.05)

    # A phrase spotting cannot find (out of vocabulary, or in another alphabet) is looked for in
    # every transcript, so nothing is skipped.
    for phrase in ["qwzx unknownword", "\u6211\u540c\u610f"]:
        oov = PocketsphinxRecognizer("s", builtin_model(), [*phrases, phrase])
        assert oov.skipped_phrases == [phrase] and oov.transcript_only
        feed_blocks(oov, audio)
        assert oov.utterances_decoded == 4 and oov.utterances_skipped == 0


def test_on_demand_streams_share_one_decoder_without_influencing_each_other(tmp_path: Path) -> None:
    def speech(voice: str, *lines: str) -> np.ndarray:
        parts = [silence(0.4)]
        for line in lines:
            parts += [synthesize(line, tmp_path, voice), silence(1.0)]
        return np.concatenate(parts)

    phrases = ["my name is", "returns are not guaranteed", "i have understood and i agree"]
    audio = {
        "agent": speech("slt", "My name is Alice Brown.", "Returns are not guaranteed."),
        "customer": speech("kal16", "I have not understood.", "I have understood and I agree."),
    }

    def transcripts(results: list[RecognitionResult]) -> list[tuple[str | None, float]]:
        return [(result.text, round(result.start, 2)) for result in results]

    alone = {}
    for name, pcm in audio.items():
        recognizer = PocketsphinxRecognizer(name, builtin_model(), phrases)
        recognizer.set_demand(True)
        alone[name] = transcripts(feed_blocks(recognizer, pcm))
        assert len(alone[name]) == 2
    # Interleaved block by block, as a worker serves the tracks of a call.
    together = {name: PocketsphinxRecognizer(name, builtin_model(), phrases) for name in audio}
    assert together["agent"]._lm is together["customer"]._lm
    results: dict[str, list[RecognitionResult]] = {name: [] for name in audio}
    length = max(len(pcm) for pcm in audio.values())
    for offset in range(0, length, 1600):
        for name, recognizer in together.items():
            recognizer.set_demand(True)
            block = audio[name][offset : offset + 1600]
            if len(block):
                results[name] += recognizer.feed(block, offset / 16000)
    for name, recognizer in together.items():
        results[name] += recognizer.flush()
        assert transcripts(results[name]) == alone[name]
