"""ICE settings from config: which addresses media binds to and announces, which STUN/TURN servers.

Host candidates are gathered on the configured addresses only (`pin_host_addresses`, a patch of
aioice in finrtc.media.aiortc_patches). aiortc's default ICE server is a public STUN host; we
always pass an explicit list, empty unless the operator configures one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aiortc import RTCConfiguration, RTCIceServer

from finrtc.config import IceServerConfig
from finrtc.media.aiortc_patches import pin_host_addresses

__all__ = ["announce_addresses", "pin_host_addresses", "rtc_configuration"]

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
