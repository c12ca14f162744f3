"""Identity checks through a real aiortc peer: a synthetic head (the astronaut, warped per
frame) answers liveness challenges; face match against an uploaded portrait; sealed evidence."""

from __future__ import annotations

import asyncio
import fractions
import io
import json
from pathlib import Path

import av
import cv2
import matplotlib
import numpy as np
import pytest
import skimage.data
from aiortc.mediastreams import MediaStreamTrack
from nacl.public import SealedBox
from nacl.secret import SecretBox

from finrtc.archive.keys import load_archive_private_key
from finrtc.identity.testing import base_head, eyes_closed, letterbox, portrait, turned
from finrtc.model import Role
from tests.archive.conftest import run_cli
from tests.conftest import archive_loaded, start_server
from tests.media.test_media_fanout import token, wait_for
from tests.support import webrtc_client as client
from tests.support.media import Pacer

pytest.importorskip("dlib")

ROOM = "kyc-1"
FPS = 15


def hopper() -> np.ndarray:
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return letterbox(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))


class HeadTrack(MediaStreamTrack):
    """Sends whatever picture the test puts in `picture`, as 640x480 video at 15 fps."""

    kind = "video"

    def __init__(self, picture: np.ndarray) -> None:
        super().__init__()
        self.picture = picture
        self._pacer = Pacer(1 / FPS)

    async def recv(self) -> av.VideoFrame:
        index = await self._pacer.next()
        frame = av.VideoFrame.from_ndarray(self.picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = int(index * 90000 / FPS)
        frame.time_base = fractions.Fraction(1, 90000)
        return frame


async def perform(track: HeadTrack, picture: np.ndarray, seconds: float) -> None:
    track.picture = picture
    await asyncio.sleep(seconds)
    track.picture = base_head()[0]


async def test_liveness_face_match_and_sealed_evidence(tmp_path: Path, http) -> None:
    keys, loaded = archive_loaded(
        tmp_path,
        identity={"enabled": True, "action_timeout_s": 4.0, "match_interval_s": 0.5,
                  "recheck_interval_s": 1.0},
        compliance={"scripts": {"demo": "builtin:demo_insurance_en"}},
        rooms={"default_policy": {"script": "demo", "identity": {"require": ["liveness", "face_match"]}}},
    )
    server = await start_server(loaded)
    agent = {"Authorization": f"Bearer {token(ROOM, 'alice')}"}
    events: list[dict] = []
    customer_events: list[dict] = []
    head = HeadTrack(base_head()[0])
    try:
        customer = await client.publish(http, server.base, ROOM, token(ROOM, "carol", Role.CUSTOMER), [head])

        async def collect(ws, into: list[dict]) -> None:
            async for message in ws:
                into.append(json.loads(message.data))

        ws_agent = await http.ws_connect(f"{server.base}/v1/rooms/{ROOM}/events?token={token(ROOM, 'alice')}")
        ws_customer = await http.ws_connect(
            f"{server.base}/v1/rooms/{ROOM}/events?token={token(ROOM, 'carol', Role.CUSTOMER)}"
        )
        tasks = [asyncio.create_task(collect(ws_agent, events)),
                 asyncio.create_task(collect(ws_customer, customer_events))]

        def of(kind: str, source: list[dict] = events) -> list[dict]:
            return [e["data"] for e in source if e["type"] == kind]

        # Reference upload: wrong role, not an image, too large -> 4xx JSON; then the portrait.
        url = f"{server.base}/v1/rooms/{ROOM}/identity/reference"
        picture = portrait(skimage.data.astronaut())
        customer_auth = {"Authorization": f"Bearer {token(ROOM, 'carol', Role.CUSTOMER)}"}
        async with http.post(url, data=picture, headers={**customer_auth, "Content-Type": "image/jpeg"}) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
        jpeg = {**agent, "Content-Type": "image/jpeg"}
        async with http.post(url, data=b"%PDF-1.4 not a portrait", headers=jpeg) as r:
            assert r.status == 415 and "JPEG or PNG" in (await r.json())["error"]["message"]
        async with http.post(url, data=b"hello", headers={**agent, "Content-Type": "text/plain"}) as r:
            assert r.status == 415
        big = b"\xff\xd8\xff" + bytes(20 * 1024 * 1024)
        async with http.post(url, data=io.BytesIO(big), headers={**agent, "Content-Type": "image/jpeg"}) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "payload_too_large"
        async with http.post(url, data=picture, headers={**agent, "Content-Type": "image/jpeg"}) as r:
            assert r.status == 201, await r.text()
            reference = (await r.json())["reference"]

        await wait_for(lambda: of("identity.face_match"), 20)
        match = of("identity.face_match")[0]
        assert match["decision"] == "match" and match["distance"] < 0.6, match
        assert not of("identity.face_match", customer_events), "face match results are for staff"

        live = f"{server.base}/v1/rooms/{ROOM}/identity/liveness"
        compliance_url = f"{server.base}/v1/rooms/{ROOM}/compliance"
        async with http.get(compliance_url, headers=agent) as r:
            assert (await r.json())["requirements"] == {
                "identity.liveness": False, "identity.face_match": True
            }

        async def challenge(actions: list[str], respond: dict[str, np.ndarray]) -> dict:
            before = len(of("identity.liveness_passed")) + len(of("identity.liveness_failed"))
            async with http.post(live, json={"participant": "carol", "actions": actions}, headers=agent) as r:
                assert r.status == 201, await r.text()
                challenge_id = (await r.json())["challenge"]
            answered: set[int] = set()
            while len(of("identity.liveness_passed")) + len(of("identity.liveness_failed")) == before:
                for prompt in of("identity.liveness_prompt", customer_events):
                    if prompt["challenge"] == challenge_id and prompt["step"] not in answered:
                        answered.add(prompt["step"])
                        if prompt["action"] in respond:
                            await asyncio.sleep(0.3)
                            await perform(head, respond[prompt["action"]], 0.8)
                await asyncio.sleep(0.05)
            ends = ("identity.liveness_passed", "identity.liveness_failed")
            outcome = [e for e in events if e["type"] in ends and e["data"]["challenge"] == challenge_id]
            return {"type": outcome[0]["type"], **outcome[0]["data"]}

        actions = {"turn_left": turned(0.35), "turn_right": turned(-0.35), "blink": eyes_closed()}
        # A replayed clip of other actions: asked to turn right, the head turns left.
        wrong = await asyncio.wait_for(challenge(["turn_right", "blink"], {"turn_right": turned(0.35)}), 30)
        assert wrong["type"] == "identity.liveness_failed" and wrong["reason"] == "wrong_action", wrong
        # A still picture never blinks: the deadline fails it.
        still = await asyncio.wait_for(challenge(["blink", "turn_left"], {}), 30)
        assert still["type"] == "identity.liveness_failed" and still["reason"] == "timeout", still
        # No face at all.
        head.picture = letterbox(skimage.data.coffee())
        await asyncio.sleep(0.5)
        none = await asyncio.wait_for(challenge(["open_mouth", "nod"], {}), 30)
        assert none["type"] == "identity.liveness_failed" and none["reason"] == "no_face", none
        head.picture = base_head()[0]
        await asyncio.sleep(0.5)

        passed = await asyncio.wait_for(challenge(["turn_left", "blink"], actions), 30)
        assert passed["type"] == "identity.liveness_passed", json.dumps(passed)
        assert [step["action"] for step in passed["actions"]] == ["turn_left", "blink"]
        assert all(0.3 <= step["elapsed_s"] < 2.5 for step in passed["actions"]), passed
        assert passed["models"]["shape_predictor_68_face_landmarks.dat"].startswith("fbdc2cb8")
        prompts = [
            p for p in of("identity.liveness_prompt", customer_events)
            if p["challenge"] == passed["challenge"]
        ]
        assert prompts[0]["text"] == "Please turn your head to the left"

        async with http.get(compliance_url, headers=agent) as r:
            assert (await r.json())["requirements"] == {
                "identity.liveness": True, "identity.face_match": True
            }

        # Another person in front of the camera: the decision flips to no match.
        head.picture = hopper()
        await wait_for(lambda: len(of("identity.face_match")) >= 2, 20)
        other = of("identity.face_match")[1]
        assert other["decision"] == "no_match" and other["distance"] > 0.6, other

        report_url = f"{server.base}/v1/rooms/{ROOM}/identity"
        async with http.get(report_url, headers=agent) as r:
            report = await r.json()
        assert report["liveness"]["passed"] is True and report["face_match"]["matched"] is False
        assert report["required"] == ["liveness", "face_match"] and report["satisfied"] is False
        async with http.get(report_url, headers={**agent, "Accept": "text/html"}) as r:
            assert "Identity checks" in await r.text() and r.content_type == "text/html"
        async with http.get(report_url, headers=customer_auth) as r:
            assert r.status == 403

        await client.delete(http, server.base, customer)
        await client.close(customer)
        await wait_for(lambda: any(e["type"] == "session_ended" for e in events), 20)
        for task in tasks:
            task.cancel()
        await ws_agent.close()
        await ws_customer.close()
    finally:
        await server.runner.cleanup()

    # Evidence: the archive verifies and its sealed events hold every identity decision.
    session = next((tmp_path / "archive" / ROOM).iterdir())
    assert run_cli(["verify", str(session), "--signer-key", str(keys.signer_pub), "--archive-key",
                    str(keys.archive_key), "--json", "--quiet"]) == 0
    sealed = []
    for record in sorted((session / "records").glob("*.json")):
        sealed += json.loads(record.read_text())["body"].get("events") or []
    types = [e["type"] for e in sealed]
    for kind in ("identity.reference_set", "identity.face_match", "identity.liveness_prompt",
                 "identity.liveness_passed", "identity.liveness_failed"):
        assert kind in types, kind
    digests = next(e for e in sealed if e["type"] == "identity.liveness_passed")["data"]["models"]
    assert digests["dlib_face_recognition_resnet_model_v1.dat"].startswith("55533b28")
    assert picture not in b"".join(p.read_bytes() for p in session.rglob("*") if p.is_file())
    # The portrait is stored encrypted with the session key, and only there.
    attachment = session / reference["reference"]
    sealed_key = next((session / "keys").glob("*.sealed")).read_bytes()
    data_key = SealedBox(load_archive_private_key(keys.archive_key)).decrypt(sealed_key)
    assert SecretBox(data_key).decrypt(attachment.read_bytes()) == picture
    # Purge (crypto-shredding) leaves the portrait unreadable.
    later = "2100-01-01T00:00:00+00:00"
    assert run_cli(["archive", "purge", "--archive-dir", str(tmp_path / "archive"), "--signer-key",
                    str(keys.signer_key), "--as-of", later, "--json"]) == 0
    assert not list((session / "keys").glob("*.sealed"))
