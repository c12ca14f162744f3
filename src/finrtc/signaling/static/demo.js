// finrtc demo page: join a room, publish camera+mic over WHIP, watch the other party over WHEP,
// follow the room's event stream. Plain browser JavaScript, no build step, no external resources.
"use strict";

(function () {
  const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/;
  // The server does not trickle ICE, so the offer must carry every candidate; on loopback or a LAN
  // gathering finishes in milliseconds, the cap only matters with unreachable STUN/TURN servers.
  const ICE_GATHERING_TIMEOUT_MS = 5000;
  const MAX_LOG_ENTRIES = 300;
  const MAX_ALERTS = 20;
  const RECONNECT_DELAYS_MS = [500, 1000, 2000, 5000, 10000];
  const ROLE_LABEL = { agent: "Advisor", customer: "Customer", observer: "Observer" };

  const $ = (id) => document.getElementById(id);

  // Everything that belongs to one joined call; reset by leave().
  let call = null;

  // ---- messages -------------------------------------------------------------------------------

  class ServerError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // Every finrtc error body is {"error": {"code", "message"}}; anything else (a proxy page, a
  // network failure) still becomes a readable message.
  async function serverError(response) {
    let code = "http_" + response.status;
    let message = response.statusText || "request failed";
    const text = await response.text().catch(() => "");
    try {
      const body = JSON.parse(text);
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch (_) {
      if (text && text.length < 300) message = text;
    }
    return new ServerError(response.status, code, message);
  }

  function showError(title, error) {
    let detail = "";
    if (error instanceof ServerError) {
      detail = `${error.message} (HTTP ${error.status}, ${error.code})`;
    } else if (error && error.name === "NotAllowedError") {
      detail = "Camera or microphone access was denied. Allow it in the browser's site settings and join again.";
    } else if (error && error.name === "NotFoundError") {
      detail = "No camera or microphone was found. Connect one and join again.";
    } else if (error && error.name === "NotReadableError") {
      detail = "The camera or microphone is in use by another application.";
    } else if (error instanceof TypeError && /fetch/i.test(error.message)) {
      detail = "The finrtc server cannot be reached. Is it still running?";
    } else if (error) {
      detail = error.message || String(error);
    }
    $("error-title").textContent = title;
    $("error-detail").textContent = detail;
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
  }

  function showNotice(text) {
    $("notice-text").textContent = text;
    $("notice").hidden = !text;
  }

  // ---- HTTP -----------------------------------------------------------------------------------

  async function mintToken(room, identity, role) {
    const response = await fetch("/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ room, identity, role }),
    });
    if (response.status === 404 || response.status === 405) {
      throw new ServerError(response.status, "dev_token_disabled",
        "this server has no development token endpoint (it is not running in dev mode); " +
        "get an access token from your backend instead");
    }
    if (!response.ok) throw await serverError(response);
    return (await response.json()).token;
  }

  function waitForIceGathering(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        pc.removeEventListener("icegatheringstatechange", check);
        clearTimeout(timer);
        resolve();
      };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const timer = setTimeout(done, ICE_GATHERING_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  // WHIP/WHEP: POST the complete offer, get 201 + Location + the SDP answer.
  async function negotiate(pc, url, token) {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await waitForIceGathering(pc);
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", "Authorization": "Bearer " + token },
      body: pc.localDescription.sdp,
    });
    if (response.status !== 201) throw await serverError(response);
    const resource = response.headers.get("Location");
    if (!resource) throw new Error("the server answered without a Location header");
    const answer = await response.text();
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    return new URL(resource, response.url).toString();
  }

  async function deleteResource(resource, token, keepalive) {
    if (!resource) return;
    try {
      const response = await fetch(resource, {
        method: "DELETE",
        headers: { "Authorization": "Bearer " + token },
        keepalive: Boolean(keepalive),
      });
      // 404: the server already ended it (for example after the connection dropped).
      if (!response.ok && response.status !== 404) throw await serverError(response);
    } catch (error) {
      if (!keepalive) console.warn("ending", resource, "failed:", error);
    }
  }

  // ---- media ----------------------------------------------------------------------------------

  function describeState(pc) {
    const state = pc.connectionState;
    return { new: "starting", connecting: "connecting…", connected: "connected",
             disconnected: "interrupted", failed: "failed", closed: "closed" }[state] || state;
  }

  async function publish(current) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    current.publishPc = pc;
    for (const track of current.localStream.getTracks()) {
      pc.addTransceiver(track, { direction: "sendonly", streams: [current.localStream] });
    }
    pc.addEventListener("connectionstatechange", () => {
      if (call !== current) return;
      $("fact-publish").textContent = describeState(pc);
      updateRecordingIndicator();
      if (pc.connectionState === "failed") {
        showError("Your camera and microphone are no longer reaching the server.",
          new Error("The media connection failed. Leave and join again."));
      }
    });
    const resource = await negotiate(pc, `/whip/${encodeURIComponent(current.room)}`, current.token);
    if (abandoned(current, pc, resource)) return;
    current.publishLocation = resource;
    $("fact-publish").textContent = describeState(pc);
  }

  // The server binds the WHEP tracks to the watched role's publisher now or when it publishes,
  // so this can run before the other party has joined.
  async function watch(current) {
    if (call !== current) return;
    const pc = new RTCPeerConnection({ iceServers: [] });
    const stream = new MediaStream();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addEventListener("track", (event) => {
      stream.addTrack(event.track);
    });
    pc.addEventListener("connectionstatechange", () => {
      if (call !== current || current.watchPc !== pc) return;
      $("fact-watch").textContent = describeState(pc);
    });
    current.watchPc = pc;
    current.remoteStream = stream;
    $("remote-video").srcObject = stream;
    const query = `?role=${encodeURIComponent(current.watchRole)}`;
    const resource = await negotiate(pc, `/whep/${encodeURIComponent(current.room)}${query}`, current.token);
    if (abandoned(current, pc, resource)) return;
    current.watchLocation = resource;
    $("fact-watch").textContent = describeState(pc);
    playRemote();
  }

  // The user left while an offer was in flight: end the session the server just created.
  function abandoned(current, pc, resource) {
    if (call === current) return false;
    deleteResource(resource, current.token, false).finally(() => pc.close());
    return true;
  }

  function playRemote() {
    const video = $("remote-video");
    video.muted = false;
    video.play().catch(() => {
      // Autoplay with sound can be refused; play muted and let the user turn sound on.
      video.muted = true;
      video.play().catch(() => {});
      $("unmute-remote").hidden = false;
    });
  }

  async function rewatch(current, reason) {
    if (current.rewatching || call !== current) return;
    current.rewatching = true;
    try {
      // Detach the old stream first: its last frame must not count as the other party's video.
      $("remote-video").srcObject = null;
      setRemoteWaiting(reason);
      const oldPc = current.watchPc;
      const oldLocation = current.watchLocation;
      current.watchPc = null;
      current.watchLocation = null;
      await deleteResource(oldLocation, current.token, false);
      if (oldPc) oldPc.close();
      if (call === current) await watch(current);
    } catch (error) {
      if (call === current) showError("Could not start watching the other party again.", error);
    } finally {
      current.rewatching = false;
    }
  }

  function setRemoteWaiting(text) {
    $("remote-waiting-text").textContent = text;
    $("remote-waiting").hidden = false;
  }

  function onRemoteVideoShown() {
    const video = $("remote-video");
    if (call && video.srcObject === call.remoteStream && video.videoWidth > 0) {
      $("remote-waiting").hidden = true;
    }
  }

  function updateRecordingIndicator() {
    const indicator = $("recording");
    const live = Boolean(call && call.publishPc && call.publishPc.connectionState === "connected");
    indicator.classList.toggle("live", live);
    indicator.textContent = live ? "Live" : call ? "Connecting…" : "Not connected";
  }

  // ---- room events ----------------------------------------------------------------------------

  function connectEvents(current) {
    if (call !== current) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams({ token: current.token, after: String(current.lastSeq) });
    const socket = new WebSocket(`${scheme}//${location.host}/v1/rooms/${encodeURIComponent(current.room)}/events?${params}`);
    current.socket = socket;
    $("events-state").textContent = "connecting…";
    socket.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (_) {
        return;
      }
      if (event.type === "hello") {
        current.reconnects = 0;
        $("events-state").textContent = "live";
        if (event.replay_complete === false) {
          appendLocalNote(current, "Some earlier events are no longer available on the server.");
        }
        return;
      }
      if (typeof event.seq === "number") {
        if (event.seq <= current.lastSeq) return;
        current.lastSeq = event.seq;
      }
      handleEvent(current, event);
    });
    socket.addEventListener("close", (closeEvent) => {
      if (call !== current || current.socket !== socket) return;
      current.socket = null;
      // 4008: the server cut us off for reading too slowly; resume from our cursor like any drop.
      const delay = RECONNECT_DELAYS_MS[Math.min(current.reconnects, RECONNECT_DELAYS_MS.length - 1)];
      current.reconnects += 1;
      $("events-state").textContent = `reconnecting (${closeEvent.code})…`;
      current.reconnectTimer = setTimeout(() => connectEvents(current), delay);
    });
  }

  function formatTime(seconds) {
    const date = typeof seconds === "number" ? new Date(seconds * 1000) : new Date();
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function who(data) {
    const name = data.participant || data.viewer || "";
    const role = data.role ? ROLE_LABEL[data.role] || data.role : "";
    return [role, name].filter(Boolean).join(" ");
  }

  // A one-line reading of well-known events; any other event still shows its type and data.
  function summarize(event) {
    const data = event.data || {};
    switch (event.type) {
      case "participant_joined": return `${who(data)} joined`;
      case "participant_left": return `${who(data)} left${data.reason ? " (" + data.reason + ")" : ""}`;
      case "track_published": return `${who(data)} publishes ${data.kind || "a track"}${data.codec ? " (" + String(data.codec).split("/").pop() + ")" : ""}`;
      case "track_unpublished": return `${data.participant || "A participant"} stopped sending ${data.kind || "a track"}`;
      case "subscription_bound": return `${data.viewer} now receives ${data.publisher}`;
      case "session_started": return "Recorded session started";
      case "session_ended": return data.clean === false ? "Session ended unexpectedly" : "Session ended";
      case "face_lost": return `${who(data)}: face not visible`;
      case "face_returned": return `${who(data)}: face visible again`;
      case "face_present": return `${who(data)}: face visible`;
      case "multiple_faces": return `${who(data)}: more than one face in the picture`;
      case "multiple_faces_ended": return `${who(data)}: one face again`;
      default: break;
    }
    for (const key of ["text", "message", "title", "reason"]) {
      if (typeof data[key] === "string" && data[key]) return data[key];
    }
    if (data.stage && typeof data.stage === "object" && data.stage.title) return data.stage.title;
    return "";
  }

  function isPrompt(event) {
    return /prompt/i.test(event.type);
  }

  function renderValue(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "object") {
      const text = JSON.stringify(value);
      return text.length > 240 ? text.slice(0, 237) + "…" : text;
    }
    return String(value);
  }

  function appendLogEntry(current, entry) {
    const log = $("event-log");
    log.prepend(entry);
    while (log.children.length > MAX_LOG_ENTRIES) log.lastElementChild.remove();
  }

  function appendLocalNote(current, text) {
    const item = document.createElement("li");
    item.className = "event sev-warning";
    item.textContent = text;
    appendLogEntry(current, item);
  }

  function renderEvent(event) {
    const severity = ["info", "warning", "alert"].includes(event.severity) ? event.severity : "info";
    const item = document.createElement("li");
    item.className = `event sev-${severity}` + (isPrompt(event) ? " kind-prompt" : "");
    item.dataset.type = event.type;
    if (typeof event.seq === "number") item.dataset.seq = String(event.seq);

    const head = document.createElement("div");
    head.className = "event-head";
    const time = document.createElement("time");
    if (typeof event.time === "number") time.dateTime = new Date(event.time * 1000).toISOString();
    time.textContent = formatTime(event.time);
    const type = document.createElement("span");
    type.className = "event-type";
    type.textContent = event.type;
    head.append(time, type);
    if (severity !== "info") {
      const badge = document.createElement("span");
      badge.className = "sev";
      badge.textContent = severity;
      head.append(badge);
    }
    item.append(head);

    const summary = summarize(event);
    if (summary) {
      const line = document.createElement("div");
      line.className = "event-summary";
      line.textContent = summary;
      item.append(line);
    }
    const data = event.data || {};
    const keys = Object.keys(data);
    if (keys.length) {
      const list = document.createElement("dl");
      list.className = "event-data";
      for (const key of keys) {
        const term = document.createElement("dt");
        term.textContent = key;
        const value = document.createElement("dd");
        value.textContent = renderValue(data[key]);
        list.append(term, value);
      }
      if (summary) {
        // The summary line says what happened; the raw fields stay one click away.
        const details = document.createElement("details");
        const label = document.createElement("summary");
        label.textContent = "Details";
        details.append(label, list);
        item.append(details);
      } else {
        // Event types this page does not know yet show all their data.
        item.append(list);
      }
    }
    return item;
  }

  function handleEvent(current, event) {
    const data = event.data || {};
    appendLogEntry(current, renderEvent(event));

    // The server ends a viewer's tracks when the watched publisher stops and does not rebind
    // that viewer; subscribe afresh so the tracks bind to whoever publishes next in that role.
    // Either event can come first, so each publisher's departure triggers one re-subscription.
    const role = event.type === "participant_left" ? data.role : current.participants.get(data.participant);
    if ((event.type === "participant_left" || event.type === "track_unpublished")
        && data.participant && data.participant !== current.identity && role === current.watchRole
        && !current.departed.has(data.participant)) {
      current.departed.add(data.participant);
      rewatch(current, `The ${ROLE_LABEL[current.watchRole].toLowerCase()} left. Waiting for them to rejoin…`);
    }
    if (event.type === "participant_joined" && data.participant) {
      current.participants.set(data.participant, data.role);
      current.departed.delete(data.participant);
    } else if (event.type === "track_published" && data.participant) {
      current.departed.delete(data.participant);
    } else if (event.type === "participant_left" && data.participant) {
      current.participants.delete(data.participant);
    }

    if (typeof data.can_submit === "boolean") {
      const badge = $("submit-state");
      badge.className = "badge " + (data.can_submit ? "badge-ok" : "badge-warn");
      badge.textContent = data.can_submit ? "Ready to submit" : "Not ready to submit";
    }
    if (event.type.startsWith("identity.")) {
      updateIdentity(current, event);
      return;
    }
    if (isPrompt(event) && typeof data.text === "string") {
      $("prompt-text").textContent = data.text;
      $("prompt").classList.toggle("urgent", Boolean(data.urgent) || event.severity !== "info");
      $("prompt").hidden = false;
    }
    if (/^face_|multiple_faces/.test(event.type) && data.participant !== current.identity) {
      updatePresence(event);
    }
    if (event.severity === "alert") addAlert(event);
    if (event.type === "compliance.started" && window.finrtcI18n) window.finrtcI18n.useScriptLanguage(data.language);
    if (event.type.endsWith("started") && typeof data.require_consent === "boolean") {
      $("consent").hidden = !(data.require_consent && current.role === "customer");
    }
    if (event.type.endsWith("consent") && typeof data.granted === "boolean" && current.role === "customer") {
      $("consent-text").textContent = data.granted
        ? "You have given your consent. You can withdraw it at any time."
        : "You have not given your consent.";
    }
  }

  // Liveness challenge: the customer sees the prompt and progress, the agent the result.
  function updateIdentity(current, event) {
    const data = event.data || {};
    const badge = $("identity-state");
    const box = $("liveness");
    if (event.type === "identity.liveness_prompt" && current.role === "customer") {
      $("liveness-text").textContent = data.text;
      $("liveness-progress").textContent = `Step ${data.step} of ${data.of}`;
      box.classList.remove("urgent");
      box.hidden = false;
    } else if (event.type === "identity.liveness_action" && current.role === "customer") {
      $("liveness-progress").textContent = `Step ${data.step} of ${data.of} done`;
    } else if (event.type === "identity.liveness_passed" || event.type === "identity.liveness_failed") {
      const passed = event.type === "identity.liveness_passed";
      if (current.role === "customer") {
        $("liveness-text").textContent = passed ? "Identity check passed. Thank you." : "Identity check failed.";
        $("liveness-progress").textContent = passed ? "" : "Your advisor may ask you to try again.";
        box.classList.toggle("urgent", !passed);
        box.hidden = false;
      } else {
        badge.hidden = false;
        badge.className = "badge " + (passed ? "badge-ok" : "badge-warn");
        badge.textContent = passed
          ? `Liveness: passed (${(data.actions || []).length} actions)`
          : `Liveness: failed (${String(data.reason || "").replace("_", " ")})`;
      }
    } else if (event.type === "identity.face_match" && current.role !== "customer") {
      badge.hidden = false;
      badge.className = "badge " + (data.decision === "match" ? "badge-ok" : "badge-warn");
      badge.textContent = `Face vs ID: ${data.decision === "match" ? "match" : "no match"} (${data.similarity})`;
    }
  }

  async function startLiveness() {
    if (!call) return;
    clearError();
    const customer = [...call.participants].find(([, role]) => role === "customer");
    if (!customer) {
      showError("No customer to check.", new Error("Wait until the customer has joined the call."));
      return;
    }
    try {
      const response = await fetch(`/v1/rooms/${encodeURIComponent(call.room)}/identity/liveness`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + call.token },
        body: JSON.stringify({ participant: customer[0] }),
      });
      if (!response.ok) throw await serverError(response);
      const badge = $("identity-state");
      badge.hidden = false;
      badge.className = "badge badge-neutral";
      badge.textContent = "Liveness: running";
    } catch (error) {
      showError("The liveness check could not start.", error);
    }
  }

  function updatePresence(event) {
    const badge = $("presence-state");
    const states = {
      face_present: ["badge-ok", "Customer face: visible"],
      face_returned: ["badge-ok", "Customer face: visible"],
      multiple_faces_ended: ["badge-ok", "Customer face: visible"],
      face_lost: ["badge-alert", "Customer face: not visible"],
      multiple_faces: ["badge-warn", "Customer face: several faces"],
    };
    const state = states[event.type];
    if (!state) return;
    badge.hidden = false;
    badge.className = "badge " + state[0];
    badge.textContent = state[1];
  }

  function addAlert(event) {
    const list = $("alerts");
    const item = document.createElement("li");
    const title = document.createElement("strong");
    title.textContent = `${formatTime(event.time)} · ${event.type}`;
    const text = document.createElement("span");
    text.textContent = summarize(event) || renderValue(event.data);
    item.append(title, text);
    list.prepend(item);
    while (list.children.length > MAX_ALERTS) list.lastElementChild.remove();
    $("alerts-empty").hidden = true;
  }

  // ---- join / leave ---------------------------------------------------------------------------

  function fieldValue(id, errorId, normalize, what) {
    const input = $(id);
    const value = normalize(input.value);
    const error = $(errorId);
    if (!NAME_PATTERN.test(value)) {
      input.setAttribute("aria-invalid", "true");
      error.textContent = value
        ? `The ${what} may only use letters, digits and . _ @ - (at most 64 characters, starting with a letter or digit).`
        : `Enter a ${what}.`;
      error.hidden = false;
      return null;
    }
    input.removeAttribute("aria-invalid");
    error.hidden = true;
    return value;
  }

  function resetRemotePanels(role) {
    const watchRole = role === "agent" ? "customer" : "agent";
    $("remote-label").textContent = ROLE_LABEL[watchRole];
    setRemoteWaiting(`Waiting for the ${ROLE_LABEL[watchRole].toLowerCase()} to join…`);
    $("agent-only").hidden = role !== "agent";
    $("customer-only").hidden = role !== "customer";
    $("panel-title").textContent = role === "agent" ? "Room events" : "Call updates";
    $("event-log").replaceChildren();
    $("alerts").replaceChildren();
    $("alerts-empty").hidden = false;
    $("prompt").hidden = true;
    $("consent").hidden = true;
    $("submit-state").className = "badge badge-neutral";
    $("submit-state").textContent = "Script: not active";
    $("presence-state").hidden = true;
    $("fact-publish").textContent = "–";
    $("fact-watch").textContent = "–";
    $("mic-button").textContent = "Mute microphone";
    $("mic-button").setAttribute("aria-pressed", "false");
    $("unmute-remote").hidden = true;
  }

  async function join(event) {
    event.preventDefault();
    clearError();
    showNotice("");
    const room = fieldValue("room", "room-error", (v) => v.trim(), "room name");
    const identity = fieldValue("name", "name-error", (v) => v.trim().replace(/\s+/g, "-"), "name");
    if (!room || !identity) return;
    const role = document.querySelector('input[name="role"]:checked').value;
    if (!navigator.mediaDevices || !window.RTCPeerConnection) {
      showError("This browser cannot join the call.",
        new Error("Camera access needs a secure page: open the demo over https, or on localhost / 127.0.0.1."));
      return;
    }
    const button = $("join-button");
    button.disabled = true;
    button.textContent = "Joining…";
    const current = {
      room, identity, role,
      watchRole: role === "agent" ? "customer" : "agent",
      token: null, localStream: null,
      publishPc: null, publishLocation: null,
      watchPc: null, watchLocation: null, remoteStream: null,
      socket: null, reconnects: 0, reconnectTimer: null, lastSeq: 0,
      participants: new Map(), departed: new Set(), rewatching: false,
    };
    let step = "Could not get an access token.";
    try {
      current.token = await mintToken(room, identity, role);
      step = "Could not use your camera and microphone.";
      current.localStream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
        audio: true,
      });
      call = current;
      resetRemotePanels(role);
      $("local-video").srcObject = current.localStream;
      $("fact-room").textContent = room;
      $("fact-you").textContent = `${identity} (${ROLE_LABEL[role]})`;
      $("join").hidden = true;
      $("call").hidden = false;
      updateRecordingIndicator();
      history.replaceState(null, "", `?room=${encodeURIComponent(room)}`);

      step = "Could not publish your camera and microphone.";
      await publish(current);
      if (call !== current) return;
      // The room exists once we publish: the event stream and the viewer can attach now.
      connectEvents(current);
      step = "Could not start receiving the other party.";
      await watch(current);
    } catch (error) {
      showError(step, error);
      await leave();
    } finally {
      button.disabled = false;
      button.textContent = "Join call";
    }
  }

  async function leave(keepalive) {
    const current = call;
    call = null;
    if (!current) {
      $("call").hidden = true;
      $("join").hidden = false;
      return;
    }
    clearTimeout(current.reconnectTimer);
    if (current.socket) {
      const socket = current.socket;
      current.socket = null;
      socket.close(1000, "left");
    }
    // DELETE before closing the connections, so the server records a client-ended session
    // rather than a lost connection. The requests start synchronously (pagehide needs that).
    const ended = Promise.all([
      deleteResource(current.watchLocation, current.token, keepalive),
      deleteResource(current.publishLocation, current.token, keepalive),
    ]);
    if (current.localStream) current.localStream.getTracks().forEach((track) => track.stop());
    if (!keepalive) await ended;
    if (current.publishPc) current.publishPc.close();
    if (current.watchPc) current.watchPc.close();
    $("local-video").srcObject = null;
    $("remote-video").srcObject = null;
    $("events-state").textContent = "disconnected";
    $("call").hidden = true;
    $("join").hidden = false;
    updateRecordingIndicator();
  }

  function toggleMic() {
    if (!call || !call.localStream) return;
    const tracks = call.localStream.getAudioTracks();
    const muted = tracks.length > 0 && tracks[0].enabled;
    tracks.forEach((track) => { track.enabled = !muted; });
    const button = $("mic-button");
    button.setAttribute("aria-pressed", String(muted));
    button.textContent = muted ? "Unmute microphone" : "Mute microphone";
  }

  async function setConsent(granted) {
    if (!call) return;
    clearError();
    try {
      const response = await fetch(`/v1/rooms/${encodeURIComponent(call.room)}/consent`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + call.token },
        body: JSON.stringify({ granted }),
      });
      if (!response.ok) throw await serverError(response);
    } catch (error) {
      showError(granted ? "Your consent could not be recorded." : "Your withdrawal could not be recorded.", error);
    }
  }

  function init() {
    const params = new URLSearchParams(location.search);
    $("room").value = params.get("room") || "demo-" + Math.random().toString(36).slice(2, 8);
    if (params.get("name")) $("name").value = params.get("name");
    const role = params.get("role");
    if (role === "agent" || role === "customer") {
      document.querySelector(`input[name="role"][value="${role}"]`).checked = true;
    }
    $("join-form").addEventListener("submit", join);
    $("leave-button").addEventListener("click", () => { clearError(); leave(false); });
    $("mic-button").addEventListener("click", toggleMic);
    $("error-dismiss").addEventListener("click", clearError);
    $("consent-give").addEventListener("click", () => setConsent(true));
    $("consent-withdraw").addEventListener("click", () => setConsent(false));
    $("liveness-start").addEventListener("click", startLiveness);
    $("unmute-remote").addEventListener("click", () => {
      const video = $("remote-video");
      video.muted = false;
      video.play().then(() => { $("unmute-remote").hidden = true; }).catch(() => {});
    });
    const remoteVideo = $("remote-video");
    remoteVideo.addEventListener("resize", onRemoteVideoShown);
    remoteVideo.addEventListener("playing", onRemoteVideoShown);
    // Closing the tab ends both sessions right away instead of after the ICE timeout.
    window.addEventListener("pagehide", () => { if (call) leave(true); });
  }

  init();
})();
