"""Schemathesis hooks for the fuzz test (loaded through SCHEMATHESIS_HOOKS in its subprocess).

SDP offers and trickle fragments are text: send generated values as UTF-8 text bodies, the way
schemathesis sends text/plain, so the fuzzer reaches the WHIP/WHEP parsers.
"""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias("application/sdp", "text/plain")
schemathesis.serializer.alias("application/trickle-ice-sdpfrag", "text/plain")
