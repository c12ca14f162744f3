"""Voiceprints through real aiortc peers: a customer's voice (a flite voice, i.e. one real speaker's
recordings) is enrolled on one call and verified on later calls; a different voice does not match;
clip uploads are checked; the voiceprint is sealed, and gone once its call's archive is purged."""

from __future__ import annotations

import asyncio
import io
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nacl.public import SealedBox
from nacl.secret import SecretBox

from finrtc.archive.keys import load_archive_private_key
from finrtc.model import Role
from tests.archive.conftest import run_cli
from tests.conftest import archive_loaded, start_server
from tests.identity.speech import flite_wav, speech
from tests.media.test_media_fanout import token, wait_for
from tests.support import webrtc_client as client
from tests.support.media import ToneAudioTrack

pytest.importorskip("dlib")


def at_48k(samples: np.ndarray, rate: int) -> np.ndarray:
    positions = np.arange(0, samples.size, rate / 48000)
    return np.interp(positions, np.arange(samples.size), samples.astype(np.float64)).astype(np.int16)


class Call:
    """One call: the customer speaks `voice`; staff events are collected."""

    def __init__(self, http: Any, base: str, room: str, customer: str) -> None:
        self.http, self.base, self.room, self.customer = http, base, room, customer
        self.events: list[dict] = []
        self.agent = {"Authorization": f"Bearer {token(room, 'alice')}"}

    async def start(self, voice: str, *sentences: int) -> None:
        samples, rate = speech(voice, *sentences)
        # Half a second of silence between repeats, like a pause in conversation.
        audio = np.concatenate([at_48k(samples, rate), np.zeros(24000, np.int16)])
        self.session = await client.publish(
            self.http, self.base, self.room, token(self.room, self.customer, Role.CUSTOMER),
            [ToneAudioTrack(samples=audio)],
        )
        self.ws = await self.http.ws_connect(
            f"{self.base}/v1/rooms/{self.room}/events?token={token(self.room, 'alice')}")

        async def collect() -> None:
            async for message in self.ws:
                self.events.append(json.loads(message.data))

        self.task = asyncio.create_task(collect())

    def of(self, kind: str) -> list[dict]:
        return [e["data"] for e in self.events if e["type"] == kind]

    async def post(self, **body: Any) -> tuple[int, dict]:
        url = f"{self.base}/v1/rooms/{self.room}/identity/voiceprint"
        async with self.http.post(url, json=body, headers=self.agent) as r:
            return r.status, await r.json()

    async def end(self) -> None:
        await client.delete(self.http, self.base, self.session)
        await client.close(self.session)
        await wait_for(lambda: any(e["type"] == "session_ended" for e in self.events), 20)
        self.task.cancel()
        await self.ws.close()


async def test_enrol_verify_and_purge(tmp_path: Path, http) -> None:
    keys, loaded = archive_loaded(
        tmp_path,
        identity={"enabled": True, "voice_enrol_s": 6.0, "voice_verify_s": 4.0},
        rooms={"default_policy": {"identity": {"require": ["voice_match"]}}},
    )
    server = await start_server(loaded)
    try:
        # Call 1: the agent enrols carol's voice from the call.
        first = Call(http, server.base, "kyc-voice-1", "carol")
        await first.start("slt", 0, 1)
        url = f"{server.base}/v1/rooms/{first.room}/identity/voiceprint"
        customer = {"Authorization": f"Bearer {token(first.room, 'carol', Role.CUSTOMER)}"}
        async with http.post(url, json={"action": "enrol", "participant": "carol"}, headers=customer) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
        status, body = await first.post(action="verify", participant="carol")
        assert status == 404 and "no voiceprint" in body["error"]["message"], body
        status, body = await first.post(action="sing", participant="carol")
        assert status == 400, body
        status, body = await first.post(action="enrol", participant="carol")
        assert status == 202 and body["state"] == "collecting", body
        await wait_for(lambda: first.of("identity.voiceprint_enrolled"), 40)
        enrolled = first.of("identity.voiceprint_enrolled")[0]
        assert enrolled["customer"] == "carol" and enrolled["speech_s"] >= 6.0, enrolled
        assert enrolled["models"]["resemblyzer/pretrained.pt"].startswith("39373b86")
        assert not first.of("identity.voice_match"), "no enrolment existed when the call started"

        # Clip uploads: wrong type, not a WAV, too large, unreadable, too short -> 4xx JSON.
        agent = first.agent
        async with http.post(url, data=b"hello", headers={**agent, "Content-Type": "text/plain"}) as r:
            assert r.status == 415 and (await r.json())["error"]["code"] == "unsupported_media_type"
        wav_type = {**agent, "Content-Type": "audio/wav"}
        async with http.post(url + "?participant=erin", data=b"ID3 an mp3", headers=wav_type) as r:
            assert r.status == 415 and "WAV" in (await r.json())["error"]["message"]
        big = io.BytesIO(b"RIFF\0\0\0\0WAVE" + bytes(11 * 1024 * 1024))
        async with http.post(url + "?participant=erin", data=big, headers=wav_type) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "payload_too_large"
        async with http.post(url + "?participant=erin", data=b"RIFF\0\0\0\0WAVEjunk", headers=wav_type) as r:
            assert r.status == 400 and "WAV" in (await r.json())["error"]["message"]
        short = flite_wav("rms", "Hello.")
        async with http.post(url + "?participant=erin", data=short, headers=wav_type) as r:
            assert r.status == 400 and "speech" in (await r.json())["error"]["message"]
        buffer = io.BytesIO()
        samples, rate = speech("rms", 0, 1)
        with wave.open(buffer, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(rate)
            writer.writeframes(samples.tobytes())
        async with http.post(url + "?participant=erin", data=buffer.getvalue(), headers=wav_type) as r:
            assert r.status == 201, await r.text()
            clip = await r.json()
        assert clip["customer"] == "erin" and clip["voiceprint"].startswith("attachments/")
        await first.end()

        # Call 2: carol again, other sentences: the check starts by itself and matches.
        second = Call(http, server.base, "kyc-voice-2", "carol")
        await second.start("slt", 2, 3)
        await wait_for(lambda: second.of("identity.voice_match"), 40)
        match = second.of("identity.voice_match")[0]
        assert match["decision"] == "match" and match["enrolment"] == enrolled["enrolment"], match
        report_url = f"{server.base}/v1/rooms/{second.room}/identity"
        async with http.get(report_url, headers=second.agent) as r:
            report = await r.json()
        assert report["required"] == ["voice_match"] and report["satisfied"] is True, report
        # The enrolled clip of another speaker is not carol.
        status, body = await second.post(action="verify", participant="carol", enrolment=clip["enrolment"])
        assert status == 202, body
        await wait_for(lambda: len(second.of("identity.voice_match")) >= 2, 40)
        other = second.of("identity.voice_match")[1]
        assert other["decision"] == "no_match" and other["score"] < match["score"], other
        async with http.get(report_url, headers=second.agent) as r:
            assert (await r.json())["satisfied"] is False
        await second.end()

        # Call 3: someone else (awb) joins as carol: no match.
        third = Call(http, server.base, "kyc-voice-3", "carol")
        await third.start("awb", 2, 3)
        await wait_for(lambda: third.of("identity.voice_match"), 40)
        impostor = third.of("identity.voice_match")[0]
        assert impostor["decision"] == "no_match" and impostor["score"] < 0.82, impostor
        print(f"same voice {match['score']}, other enrolment {other['score']}, impostor {impostor['score']}")
        await third.end()

        # The voiceprint is sealed: only its ciphertext is stored, and only the session key opens it.
        session = next((tmp_path / "archive" / first.room).iterdir())
        stored = session / enrolled["voiceprint"]
        sealed_key = next((session / "keys").glob("*.sealed")).read_bytes()
        data_key = SealedBox(load_archive_private_key(keys.archive_key)).decrypt(sealed_key)
        embedding = np.frombuffer(SecretBox(data_key).decrypt(stored.read_bytes()), "<f4")
        assert embedding.shape == (256,) and abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-4
        everything = b"".join(p.read_bytes() for p in (tmp_path / "archive").rglob("*") if p.is_file())
        assert embedding.tobytes() not in everything
        for record in sorted((session / "records").glob("*.json")):
            for event in json.loads(record.read_text())["body"].get("events") or []:
                assert "embedding" not in json.dumps(event)

        # The decisions are sealed into the later calls' chains with the model digest.
        sealed = []
        for record in sorted(next((tmp_path / "archive" / second.room).iterdir()).glob("records/*.json")):
            sealed += json.loads(record.read_text())["body"].get("events") or []
        decisions = [e["data"] for e in sealed if e["type"] == "identity.voice_match"]
        assert [d["decision"] for d in decisions] == ["match", "no_match"], decisions
        model = "resemblyzer/pretrained.pt"
        assert decisions[0]["models"][model] == enrolled["models"][model]

        # Purging the enrolling call's archive destroys the voiceprint: no later call can use it.
        later = "2100-01-01T00:00:00+00:00"
        assert run_cli(["archive", "purge", "--archive-dir", str(tmp_path / "archive"), "--signer-key",
                        str(keys.signer_key), "--as-of", later, "--json"]) == 0
        assert not list((session / "keys").glob("*.sealed"))
        fourth = Call(http, server.base, "kyc-voice-4", "carol")
        await fourth.start("slt", 0)
        status, body = await fourth.post(
            action="verify", participant="carol", enrolment=enrolled["enrolment"])
        assert status == 404 and "purged" in body["error"]["message"], body
        await asyncio.sleep(3)
        assert not fourth.of("identity.voice_match")
        await fourth.end()
    finally:
        await server.runner.cleanup()
