"""A WHIP publisher in its own process, so a test can SIGKILL it (no BYE, no DELETE)."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import aioice.ice

from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack, ToneAudioTrack


async def main(base: str, room: str, token: str) -> None:
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    async with aiohttp.ClientSession() as http:
        session = await client.publish(
            http, base, room, token, [PatternVideoTrack(320, 240), ToneAudioTrack()]
        )
        while session.pc.connectionState != "connected":
            await asyncio.sleep(0.05)
        print("publishing", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
