"""A WHIP publisher on GStreamer's webrtcbin (libnice ICE, GStreamer's own DTLS with an RSA
certificate), run by the system Python that has python3-gst-1.0 (the venv has no PyGObject).

Usage: gst_whip_publisher.py URL TOKEN SECONDS VIDEO_ENCODER
Prints one JSON line per event: the answer's Location, every connection state, the end.
"""

import json
import sys
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

# Encoder element -> the rest of the video branch up to webrtcbin. The H.264 ones are the two
# encoders GStreamer WHIP publishers use (OBS-like High profile from x264, Constrained Baseline
# from Cisco's openh264); config-interval=-1 repeats SPS/PPS with every IDR as WebRTC expects.
ENCODERS = {
    "vp8enc": "vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt=96 ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96",
    # veryfast, not ultrafast: ultrafast drops CABAC and 8x8 transforms and x264 then writes a
    # Constrained Baseline stream whatever the caps say; this one is really High (64001e).
    "x264enc": "x264enc tune=zerolatency speed-preset=veryfast key-int-max=30 bitrate=800 "
    "! video/x-h264,profile=high ! rtph264pay pt=102 config-interval=-1 aggregate-mode=zero-latency "
    "! application/x-rtp,media=video,encoding-name=H264,payload=102",
    # Without packetization-mode in the caps webrtcbin may offer no fmtp at all, which means
    # mode 0 (RFC 6184), and the server accepts mode 1 only.
    "openh264enc": "openh264enc complexity=low bitrate=800000 gop-size=30 "
    "! video/x-h264,profile=constrained-baseline ! rtph264pay pt=102 config-interval=-1 "
    "aggregate-mode=zero-latency ! application/x-rtp,media=video,encoding-name=H264,payload=102,"
    "packetization-mode=(string)1,profile-level-id=(string)42e01f",
}


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main(url: str, token: str, seconds: float, encoder: str) -> int:
    Gst.init(None)
    pipeline = Gst.parse_launch(
        "webrtcbin name=webrtc bundle-policy=max-bundle "
        "videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=480,framerate=30/1 "
        f"! videoconvert ! queue ! {ENCODERS[encoder]} ! webrtc."
    )
    webrtc = pipeline.get_by_name("webrtc")
    loop = GLib.MainLoop()
    failed = []

    def post_offer() -> bool:
        offer = webrtc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(
            url, data=offer.encode(), method="POST",
            headers={"Content-Type": "application/sdp", "Authorization": "Bearer " + token},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                answer = response.read().decode()
                report(
                    event="answered", status=response.status, location=response.headers["Location"],
                    offer_fmtp=[line for line in offer.splitlines() if line.startswith("a=fmtp:")],
                )
        except Exception as error:  # the test reads the reason from this line
            body = error.read().decode(errors="replace") if hasattr(error, "read") else ""
            report(event="post_failed", error=repr(error), body=body, offer=offer)
            failed.append(error)
            loop.quit()
            return False
        _, message = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        webrtc.emit("set-remote-description", description, Gst.Promise.new())
        return False

    def on_offer(promise: Gst.Promise, _element: object, _data: object) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            report(event="offer_failed", reply=str(reply))
            failed.append(reply)
            loop.quit()
            return
        webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_negotiation_needed(element: Gst.Element) -> None:
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, element, None))

    def on_gathering(element: Gst.Element, _spec: object) -> None:
        # No trickle: the offer goes out with every candidate once gathering is complete.
        if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(post_offer)

    def on_connection(element: Gst.Element, _spec: object) -> None:
        report(event="connection", state=element.get_property("connection-state").value_nick)

    webrtc.connect("on-negotiation-needed", on_negotiation_needed)
    webrtc.connect("notify::ice-gathering-state", on_gathering)
    webrtc.connect("notify::connection-state", on_connection)
    pipeline.set_state(Gst.State.READY)
    # The linked sink pad created a sendrecv transceiver; a WHIP publisher only sends.
    webrtc.emit("get-transceiver", 0).set_property(
        "direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
    )
    pipeline.set_state(Gst.State.PLAYING)
    GLib.timeout_add(int(seconds * 1000), loop.quit)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    report(event="ended")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]))
