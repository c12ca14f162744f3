"""A WHEP viewer on GStreamer's webrtcbin: receives a room's video from finrtc, decodes it with
GStreamer's own VP8 decoder and counts the decoded frames. Run by the system Python that has
python3-gst-1.0 (the venv has no PyGObject).

Usage: gst_whep_viewer.py URL TOKEN SECONDS
Prints one JSON line per event; the last one is {"event": "ended", "decoded_frames": N, ...}.
"""

import json
import sys
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

VIDEO_CAPS = "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main(url: str, token: str, seconds: float) -> int:
    Gst.init(None)
    pipeline = Gst.Pipeline.new("viewer")
    webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
    webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
    pipeline.add(webrtc)
    loop = GLib.MainLoop()
    state = {"decoded": 0, "width": 0, "height": 0, "failed": False}

    def count_frame(_sink: Gst.Element, buffer: Gst.Buffer, pad: Gst.Pad) -> None:
        state["decoded"] += 1
        if state["decoded"] == 1:
            structure = pad.get_current_caps().get_structure(0)
            state["width"] = structure.get_value("width")
            state["height"] = structure.get_value("height")

    def on_decoded_pad(_decodebin: Gst.Element, pad: Gst.Pad) -> None:
        if not pad.query_caps(None).to_string().startswith("video/"):
            return
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("signal-handoffs", True)
        sink.set_property("sync", False)
        sink.connect("handoff", count_frame)
        pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))

    def on_incoming_pad(_element: Gst.Element, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decodebin = Gst.ElementFactory.make("decodebin")
        decodebin.connect("pad-added", on_decoded_pad)
        pipeline.add(decodebin)
        decodebin.sync_state_with_parent()
        pad.link(decodebin.get_static_pad("sink"))
        report(event="track")

    def post_offer() -> bool:
        offer = webrtc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(
            url, data=offer.encode(), method="POST",
            headers={"Content-Type": "application/sdp", "Authorization": "Bearer " + token},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                answer = response.read().decode()
                report(event="answered", status=response.status, location=response.headers["Location"])
        except Exception as error:  # the test reads the reason from this line
            report(event="post_failed", error=repr(error))
            state["failed"] = True
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
            state["failed"] = True
            loop.quit()
            return
        webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(element: Gst.Element, _spec: object) -> None:
        # No trickle: the offer goes out with every candidate once gathering is complete.
        if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(post_offer)

    def on_connection(element: Gst.Element, _spec: object) -> None:
        report(event="connection", state=element.get_property("connection-state").value_nick)

    webrtc.connect("pad-added", on_incoming_pad)
    webrtc.connect("notify::ice-gathering-state", on_gathering)
    webrtc.connect("notify::connection-state", on_connection)
    webrtc.emit(
        "add-transceiver",
        GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
        Gst.Caps.from_string(VIDEO_CAPS),
    )
    pipeline.set_state(Gst.State.PLAYING)
    webrtc.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, webrtc, None))
    GLib.timeout_add(int(seconds * 1000), loop.quit)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    report(event="ended", decoded_frames=state["decoded"], width=state["width"], height=state["height"])
    return 1 if state["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
