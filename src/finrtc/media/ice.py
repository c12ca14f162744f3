"""ICE settings from config: which addresses media binds to and announces, which STUN/TURN servers.

aioice gathers host candidates from every interface except 127.0.0.1 and has no option to choose
them, so the gathering function is replaced process-wide with one that returns the configured
addresses (like mediasoup's listenIps). aiortc's default ICE server is a public STUN host; we
always pass an explicit list, empty unless the operator configures one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from finrtc.config import IceServerConfig

_bound_addresses: list[str] = []


def _configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [
        address
        for address in _bound_addresses
        if (use_ipv4 and ":" not in address) or (use_ipv6 and ":" in address)
    ]


def pin_host_addresses(addresses: Sequence[str]) -> None:
    """Make every peer connection in this process gather host candidates on `addresses` only."""
    _bound_addresses[:] = list(addresses)
    aioice.ice.get_host_addresses = _configured_host_addresses


def rtc_configuration(servers: Sequence[IceServerConfig]) -> RTCConfiguration:
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(server.urls), username=server.username, credential=server.credential)
            for server in servers
        ]
    )


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$")


def announce_addresses(sdp: str, bound: Sequence[str], announced: Sequence[str]) -> str:
    """Rewrite host candidates from bound to announced addresses (1:1 NAT), keeping order."""
    if not announced:
        return sdp
    mapping = dict(zip(bound, announced, strict=False))
    lines = []
    for line in sdp.splitlines():
        match = _CANDIDATE.match(line)
        if match and match.group(2) in mapping:
            line = f"{match.group(1)}{mapping[match.group(2)]}{match.group(3)}"
        elif line.startswith("c=IN IP4 ") and line[9:] in mapping:
            line = "c=IN IP4 " + mapping[line[9:]]
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"
