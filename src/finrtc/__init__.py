"""finrtc: a compliance-first WebRTC media server for regulated financial video calls."""

__version__ = "0.1.0"
