"""A WHEP viewer in its own process, so a test can freeze it (SIGSTOP) like a hung client."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import aioice.ice

from tests.support import webrtc_client as client


async def main(base: str, room: str, token: str, query: str) -> None:
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    async with aiohttp.ClientSession() as http:
        session = await client.play(http, base, room, token, query=query)
        while not (session.received.get("video") and session.received["video"].count >= 10):
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
