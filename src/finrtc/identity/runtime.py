"""The server-wide identity runtime: loaded models, live sessions by room, the session extension."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from finrtc.errors import BadRequestError
from finrtc.events import RoomEvent
from finrtc.hooks.chain import HookProvider
from finrtc.identity.analysis import FaceAnalyzer
from finrtc.identity.models import FaceModels
from finrtc.identity.service import IdentityHookProvider, IdentitySession
from finrtc.identity.settings import IdentityConfig
from finrtc.identity.voice import VoiceEncoder, shared_encoder
from finrtc.identity.voiceprint import VoiceHookProvider, VoiceprintRegistry, VoiceprintSession
from finrtc.media.pipeline import TrackPipeline
from finrtc.model import Severity
from finrtc.session import CallSession, SessionExtension

if TYPE_CHECKING:
    from finrtc.room import Room

# Results of ended calls kept readable (bounded memory).
FINISHED_KEPT = 1000
# The magic numbers of the portrait formats accepted (what an ID reader or a scan produces).
IMAGE_MAGIC = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}


def sniff_image(data: bytes) -> str | None:
    return next((kind for magic, kind in IMAGE_MAGIC.items() if data.startswith(magic)), None)


def embed_portrait(models: FaceModels, data: bytes) -> NDArray[np.float64]:
    """The embedding of the largest face in an uploaded JPEG/PNG (blocking: ~0.2-0.5 s)."""
    import cv2

    buffer = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadRequestError("the reference is not a decodable JPEG or PNG image")
    rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    gray = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    faces = models.detect(gray, upsample=1) or models.detect(gray, upsample=2)
    if not faces:
        raise BadRequestError("no face found in the reference image: upload the ID card's portrait")
    _, shape = models.landmarks(gray, faces[0])
    return models.embed(rgb, shape)


class IdentityExtension:
    """Binds an IdentitySession to a call session; closes it (results kept) when the call ends."""

    name = "identity"

    def __init__(self, session: IdentitySession, on_close: Callable[[], None]) -> None:
        self.session = session
        self._on_close = on_close

    def hook_providers(self) -> Sequence[HookProvider]:
        video: HookProvider = IdentityHookProvider(self.session)
        if self.session.voice is None:
            return (video,)
        return (video, VoiceHookProvider(self.session.voice))

    def on_track(self, pipeline: TrackPipeline) -> None:
        pass

    def on_event(self, event: RoomEvent) -> None:
        pass

    async def close(self, clean: bool) -> None:
        self.session.closed = True
        if self.session.voice is not None:
            self.session.voice.closed = True
        self._on_close()


class IdentityRuntime:
    """Create at server start (loads and checks the models); one per server."""

    def __init__(self, config: IdentityConfig) -> None:
        self.config = config
        self.models = FaceModels()
        # Warm the detector and predictor so the first sample's cost does not throttle sampling.
        FaceAnalyzer(self.models).analyze(np.zeros((120, 160), np.uint8), None)
        self.voice_encoder: VoiceEncoder | None = shared_encoder() if config.voiceprints else None
        self.voiceprints = VoiceprintRegistry(config.max_voiceprints)
        self.live: dict[str, IdentitySession] = {}
        self.finished: OrderedDict[str, IdentitySession] = OrderedDict()
        self.sessions_by_call: dict[str, CallSession] = {}

    def lookup(self, room: str) -> IdentitySession | None:
        return self.live.get(room) or self.finished.get(room)

    async def extension(self, room: Room, session: CallSession) -> SessionExtension | None:
        loop = asyncio.get_running_loop()

        def publish(event_type: str, data: dict[str, Any], severity: Severity, audience: Any) -> None:
            if loop.is_closed():
                return
            # Worker threads and the event loop both publish; the stream is loop-only.
            loop.call_soon_threadsafe(
                lambda: room.events.publish(event_type, data, severity=severity, audience=audience)
            )

        identity = IdentitySession(room.name, self.config, self.models, publish, session.clock)
        if self.voice_encoder is not None:
            identity.voice = VoiceprintSession(
                room.name, self.config, self.voice_encoder, self.voiceprints, publish,
                auto_verify="voice_match" in room.policy.identity.require,
            )
        self.live[room.name] = identity
        self.sessions_by_call[room.name] = session

        def closed() -> None:
            if self.live.get(room.name) is identity:
                del self.live[room.name]
                self.sessions_by_call.pop(room.name, None)
            self.finished[room.name] = identity
            self.finished.move_to_end(room.name)
            while len(self.finished) > FINISHED_KEPT:
                self.finished.popitem(last=False)
            # Embeddings are personal data: the live ones go with the session.
            identity.reference = None
            for state in identity.matches.values():
                state.distances.clear()

        return IdentityExtension(identity, closed)


