"""The OpenAPI 3.1 description of finrtc's HTTP surface, served at GET /openapi.json.

Written by hand (tests/api/test_api_contract.py checks it against the router both ways and
validates responses against its schemas). Routes that exist only when a config switch is on
(demo page, dev tokens) are described only then, so the document always matches this server.
"""

from __future__ import annotations

import copy
from typing import Any

from finrtc import __version__
from finrtc.config import FinrtcConfig, RoomPolicy

Json = dict[str, Any]

NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
MAX_SEQ = 2**63 - 1


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, headers: Json | None = None) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if headers:
        response["headers"] = headers
    return response


def _json(description: str, schema: Json, headers: Json | None = None) -> Json:
    response: Json = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _header(description: str, schema: Json | None = None) -> Json:
    return {"description": description, "schema": schema or {"type": "string"}}


UNAUTHORIZED = _error(
    "No credentials, or invalid ones (wrong key or secret, bad signature, expired token).",
    {"WWW-Authenticate": _header("The accepted authentication schemes.")},
)
FORBIDDEN = _error("Valid credentials that do not allow this (not admin, another room, role).")
BAD_REQUEST = _error("Malformed request; the message names the offending field path.")
NOT_FOUND = _error("The room, participant or session does not exist.")
UNSUPPORTED = _error("Wrong Content-Type for the body.")
TOO_LARGE = _error("The body is larger than server.max_body_bytes.")
UNAVAILABLE = _error(
    "A capacity limit (room full) or the server is draining; retry later or elsewhere.",
    {"Retry-After": _header("Seconds to wait.", {"type": "integer"})},
)
GONE = _error("The room was closed; creating it again (or a first publish) reuses the name.")
METHOD_NOT_ALLOWED = _error(
    "The method is not supported on this URL.", {"Allow": _header("The methods that are.")}
)

ROOM_PARAM: Json = {
    "name": "room", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": NAME_PATTERN}, "description": "Room name.",
}
RESOURCE_PARAM: Json = {
    "name": "resource", "in": "path", "required": True, "schema": {"type": "string"},
    "description": "Session id from the Location header of the 201 response.",
}
IDENTITY_PARAM: Json = {
    "name": "identity", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": NAME_PATTERN}, "description": "Participant identity.",
}

ADMIN_SECURITY: list[Json] = [{"apiKey": []}, {"adminToken": []}]
PARTICIPANT_SECURITY: list[Json] = [{"participantToken": []}]


def _policy_schema(config: FinrtcConfig) -> Json:
    # The same strict model validates requests; deriving the schema from it keeps them in step.
    schema = RoomPolicy.model_json_schema()
    # The names the server accepts are this config's: a schema-valid policy is an accepted one.
    schema["properties"]["script"] = {"enum": [*sorted(config.compliance.scripts), None], "default": None}
    schema["properties"]["retention_class"] = {
        "enum": sorted(config.archive.retention_classes), "default": "default"}
    if config.archive.enabled:
        # A recorded room's residency must name an archive target (archive.region / targets).
        schema["properties"]["residency"] = {
            "enum": [*config.archive.residencies(), None], "default": None}
    schema.pop("title", None)
    schema["additionalProperties"] = False
    schema["description"] = (
        "A room's policy. On creation, fields left out take the operator's "
        "rooms.default_policy. script must name an entry of compliance.scripts and "
        "retention_class one of archive.retention_classes; with the archive on, residency "
        "one of the archive's residencies (archive.region, archive.targets)."
    )
    # Nested policy sections (identity) are inlined: "$defs" would not resolve in components.
    definitions = schema.pop("$defs", {})
    for name, prop in schema.get("properties", {}).items():
        reference = prop.pop("$ref", None)
        if reference is not None:
            inlined = dict(definitions[reference.rsplit("/", 1)[-1]])
            inlined.pop("title", None)
            for inner in inlined.get("properties", {}).values():
                inner.pop("title", None)
            schema["properties"][name] = {**inlined, **prop}
        prop.pop("title", None)
    return schema


def _schemas(config: FinrtcConfig) -> Json:
    return {
        "Error": {
            "type": "object", "required": ["error"], "additionalProperties": False,
            "properties": {"error": {
                "type": "object", "required": ["code", "message"], "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "description": "Stable machine code, e.g. not_found."},
                    "message": {"type": "string", "description": "What went wrong and what to do."},
                },
            }},
        },
        "RoomPolicy": _policy_schema(config),
        "CreateRoomRequest": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": NAME_PATTERN},
                "policy": _ref("RoomPolicy"),
            },
        },
        "Track": {
            "type": "object", "required": ["id", "kind", "subscribers"], "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "kind": {"type": "string", "enum": ["audio", "video"]},
                "subscribers": {"type": "integer", "minimum": 0},
            },
        },
        "Participant": {
            "type": "object", "additionalProperties": False,
            "required": ["identity", "role", "publishing", "tracks", "subscriptions"],
            "properties": {
                "identity": {"type": "string"},
                "role": _ref("Role"),
                "publishing": {"type": "boolean"},
                "tracks": {"type": "array", "items": _ref("Track")},
                "subscriptions": {"type": "integer", "minimum": 0,
                                  "description": "WHEP sessions this participant holds."},
            },
        },
        "Role": {"type": "string", "enum": ["agent", "customer", "observer"]},
        "CallSession": {
            "type": "object", "required": ["id", "started", "media_time", "services"],
            "additionalProperties": False,
            "description": "The recorded call in progress: from the first publish to the last unpublish.",
            "properties": {
                "id": {"type": "string"},
                "started": {"type": "number", "description": "Unix time."},
                "media_time": {"type": "number", "description": "Seconds on the session's media clock."},
                "services": {"type": "array", "items": {"type": "string"},
                             "description": "Session services running (recording, compliance...)."},
            },
        },
        "Room": {
            "type": "object", "additionalProperties": False,
            "required": ["name", "created", "explicit", "policy", "state", "session", "last_session",
                         "participants"],
            "properties": {
                "name": {"type": "string"},
                "created": {"type": "number", "description": "Unix time."},
                "explicit": {"type": "boolean",
                             "description": "Created through the API (true) or by a first publish."},
                "policy": _ref("RoomPolicy"),
                "state": {"type": "string", "enum": ["idle", "live"]},
                "session": {"oneOf": [_ref("CallSession"), {"type": "null"}]},
                "last_session": {"type": ["string", "null"], "description": "Id of the last ended session."},
                "participants": {"type": "array", "items": _ref("Participant")},
            },
        },
        "RoomList": {
            "type": "object", "required": ["rooms"], "additionalProperties": False,
            "properties": {"rooms": {"type": "array", "items": _ref("Room")}},
        },
        "CloseRoomRequest": {
            "type": "object", "additionalProperties": False,
            "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 200}},
        },
        "ClosedRoom": {
            "type": "object", "required": ["name", "closed", "reason", "last_session"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "closed": {"const": True},
                "reason": {"type": "string"},
                "last_session": {"type": ["string", "null"],
                                 "description": "The session whose recording was sealed, if any."},
            },
        },
        "TokenRequest": {
            "type": "object", "required": ["room", "identity", "role"], "additionalProperties": False,
            "properties": {
                "room": {"type": "string", "pattern": NAME_PATTERN},
                "identity": {"type": "string", "pattern": NAME_PATTERN},
                "role": _ref("Role"),
                "ttl_s": {"type": "integer", "minimum": 1, "maximum": 86400, "default": 3600},
                "can_publish": {"type": ["boolean", "null"], "default": None,
                                "description": "Default: true except for observers."},
                "can_subscribe": {"type": "boolean", "default": True},
            },
        },
        "TokenResponse": {
            "type": "object", "required": ["token", "room", "identity", "role", "expires_at"],
            "additionalProperties": False,
            "properties": {
                "token": {"type": "string", "description": "HS256 JWT for WHIP/WHEP and events."},
                "room": {"type": "string"},
                "identity": {"type": "string"},
                "role": _ref("Role"),
                "expires_at": {"type": "integer", "description": "Unix time."},
            },
        },
        "RoomEvent": {
            "type": "object", "required": ["seq", "type", "room", "severity", "time", "data"],
            "description": "One message of the events WebSocket (after a first {type: hello} message).",
            "properties": {
                "seq": {"type": "integer", "description": "Resume after it with ?after=SEQ."},
                "type": {"type": "string", "examples": ["participant_joined", "track_published"]},
                "room": {"type": "string"},
                "severity": {"type": "string"},
                "time": {"type": "number"},
                "data": {"type": "object"},
            },
        },
        "ConsentRequest": {
            "type": "object", "additionalProperties": False,
            "properties": {"granted": {"type": "boolean", "default": True}},
        },
        "ConsentState": {
            "type": "object", "required": ["consent_given", "can_submit"],
            "properties": {"consent_given": {"type": "boolean"}, "can_submit": {"type": "boolean"}},
        },
        "ComplianceReport": {
            "type": "object",
            "description": "The script-adherence report of the room's call (live or final).",
        },
        "IdentityReport": {
            "type": "object",
            "required": ["room", "required", "satisfied", "liveness", "face_match", "models"],
            "description": "Identity checks of the room's call: liveness challenges with per-action "
                           "timings and scores, face-match results, the SHA-256 of every model.",
            "properties": {"room": {"type": "string"}, "required": {"type": "array", "items": {
                "type": "string", "enum": ["liveness", "face_match", "voice_match"]}},
                "satisfied": {"type": "boolean"},
                "liveness": {"type": "object"}, "face_match": {"type": "object"},
                "voice_match": {"type": ["object", "null"]},
                "models": {"type": "object", "additionalProperties": {"type": "string"}}},
        },
        "VoiceprintRequest": {
            "type": "object", "required": ["action", "participant"], "additionalProperties": False,
            "properties": {
                "action": {"type": "string", "enum": ["enrol", "verify"]},
                "participant": {"type": "string", "description": "Whose voice in the call."},
                "customer": {"type": "string", "description": "verify: the identity whose enrolled "
                             "voiceprint to compare with (default: the participant)."},
                "enrolment": {"type": "string", "description": "verify: a given enrolment id."},
            },
        },
        "VoiceprintState": {
            "type": "object", "required": ["participant", "action", "state", "speech_needed_s"],
            "description": "Collecting speech; the result arrives as an identity.voiceprint_enrolled "
                           "or identity.voice_match room event.",
            "properties": {"participant": {"type": "string"}, "action": {"type": "string"},
                           "state": {"type": "string"}, "speech_needed_s": {"type": "number"},
                           "enrolment": {"type": "string"}},
        },
        "VoiceprintEnrolment": {
            "type": "object", "required": ["enrolment", "customer", "voiceprint", "ciphertext_sha256"],
            "description": "Where the encrypted voiceprint is sealed (never the voiceprint itself).",
            "properties": {"enrolment": {"type": "string"}, "customer": {"type": "string"},
                           "voiceprint": {"type": "string"}, "ciphertext_sha256": {"type": "string"},
                           "speech_s": {"type": "number"}, "enrolled_by": {"type": "string"},
                           "models": {"type": "object", "additionalProperties": {"type": "string"}}},
        },
        "LivenessRequest": {
            "type": "object", "required": ["participant"], "additionalProperties": False,
            "properties": {"participant": {"type": "string"}, "actions": {
                "type": "array", "minItems": 2, "maxItems": 4, "uniqueItems": True,
                "description": "Omit for a random sequence of 2-4 actions.",
                "items": {"type": "string",
                          "enum": ["blink", "turn_left", "turn_right", "open_mouth", "nod"]}}},
        },
        "LivenessChallenge": {
            "type": "object", "required": ["challenge", "participant", "requested", "state"],
            "properties": {"challenge": {"type": "string"}, "participant": {"type": "string"},
                           "requested": {"type": "array", "items": {"type": "string"}},
                           "state": {"type": "string", "enum": ["running", "passed", "failed"]},
                           "reason": {"type": ["string", "null"]}, "steps": {"type": "array"}},
        },
        "IdentityReference": {
            "type": "object", "required": ["reference"],
            "properties": {"reference": {"type": "object", "description": "The encrypted archive file of "
                           "the portrait and its digests (never the picture)."}},
        },
    }


SDP_OFFER_BODY: Json = {
    "required": True,
    "content": {"application/sdp": {"schema": {"type": "string", "description": "SDP offer (RFC 8866)."}}},
}
TRICKLE_BODY: Json = {
    "required": True,
    "content": {"application/trickle-ice-sdpfrag": {
        "schema": {"type": "string", "description": "SDP fragment (RFC 8840): ice-ufrag, ice-pwd, "
                   "a=mid, a=candidate lines, optionally a=end-of-candidates."},
    }},
}


def _media_operations(kind: str) -> tuple[Json, Json]:
    """The endpoint and session path items for WHIP or WHEP (RFC 9725 and its WHEP sibling)."""
    verb = "publish" if kind == "whip" else "play"
    tag = kind.upper()
    cors_preflight: Json = {
        "description": "Capabilities (Allow, Accept-Post/Accept-Patch), or a CORS preflight answer "
                       "when Origin and Access-Control-Request-Method are sent.",
        "headers": {
            "Allow": _header("Methods of this URL."),
            "Access-Control-Allow-Origin": _header("Present for origins in server.cors_allow_origins."),
            "Access-Control-Allow-Methods": _header("Preflight only."),
            "Access-Control-Allow-Headers": _header("Preflight only: Authorization, Content-Type, If-Match."),
        },
    }
    created_headers = {
        "Location": _header("The session URL: PATCH it to trickle ICE, DELETE it to end."),
        "ETag": _header("Entity-tag of the ICE session; send it in If-Match when PATCHing."),
        "Link": _header('One `<url>; rel="ice-server"` per configured STUN/TURN URL, with '
                        "username and credential attributes for TURN."),
    }
    parameters: list[Json] = [ROOM_PARAM]
    if kind == "whep":
        parameters = [
            ROOM_PARAM,
            {"name": "participant", "in": "query", "required": False,
             "schema": {"type": "string", "pattern": NAME_PATTERN},
             "description": "Watch this publisher (now, or as soon as it publishes)."},
            {"name": "role", "in": "query", "required": False, "schema": _ref("Role"),
             "description": "Watch the first publisher with this role."},
        ]
    endpoint: Json = {
        "post": {
            "tags": [tag], "operationId": f"{kind}_{verb}", "summary": f"{tag}: {verb} media",
            "security": PARTICIPANT_SECURITY, "parameters": parameters,
            "requestBody": SDP_OFFER_BODY,
            "responses": {
                "201": {"description": "Session created; the body is the SDP answer.",
                        "headers": created_headers,
                        "content": {"application/sdp": {"schema": {"type": "string"}}}},
                "400": _error("The offer is not usable SDP, or has no suitable media."),
                "401": UNAUTHORIZED, "403": FORBIDDEN,
                "404": _error("The room does not exist (WHIP: when rooms.require_explicit_creation)."),
                "405": METHOD_NOT_ALLOWED,
                "409": _error("This identity already publishes, or holds another role in the room."),
                "413": TOO_LARGE, "415": UNSUPPORTED, "503": UNAVAILABLE,
            },
        },
        "options": {
            "tags": [tag], "operationId": f"{kind}_endpoint_options", "security": [],
            "summary": f"{tag} endpoint capabilities / CORS preflight", "parameters": [ROOM_PARAM],
            "responses": {"204": cors_preflight, "403": _error("Preflight from an origin not allowed."),
                          "405": METHOD_NOT_ALLOWED},
        },
    }
    session: Json = {
        "parameters": [ROOM_PARAM, RESOURCE_PARAM],
        "patch": {
            "tags": [tag], "operationId": f"{kind}_trickle", "security": PARTICIPANT_SECURITY,
            "summary": "Trickle ICE candidates (RFC 8840 fragment)",
            "parameters": [{"name": "If-Match", "in": "header", "required": True,
                            "schema": {"type": "string"},
                            "description": "The ETag from the 201 response, or *."}],
            "requestBody": TRICKLE_BODY,
            "responses": {
                "204": {"description": "Candidates handed to the ICE agent."},
                "400": _error("Malformed SDP fragment or candidate."),
                "401": UNAUTHORIZED, "403": FORBIDDEN,
                "404": _error("No such session (ended, or never existed)."),
                "405": METHOD_NOT_ALLOWED,
                "412": _error("If-Match does not name the current ICE session."),
                "413": TOO_LARGE,
                "415": _error("The body is not application/trickle-ice-sdpfrag.",
                              {"Accept-Patch": _header("application/trickle-ice-sdpfrag")}),
                "422": _error("ICE restart (new ice-ufrag/ice-pwd) is not supported: DELETE and POST anew."),
                "428": _error("If-Match is missing."),
            },
        },
        "delete": {
            "tags": [tag], "operationId": f"{kind}_end", "security": PARTICIPANT_SECURITY,
            "summary": "End the session",
            "responses": {"200": {"description": "Ended."}, "401": UNAUTHORIZED, "403": FORBIDDEN,
                          "404": NOT_FOUND, "405": METHOD_NOT_ALLOWED},
        },
        "options": {
            "tags": [tag], "operationId": f"{kind}_session_options", "security": [],
            "summary": f"{tag} session capabilities / CORS preflight",
            "responses": {"204": cors_preflight, "403": _error("Preflight from an origin not allowed."),
                          "405": METHOD_NOT_ALLOWED},
        },
    }
    return endpoint, session


def _room_links() -> Json:
    """What a created room leads to (OpenAPI links; fuzzers and generated clients follow them)."""
    room = {"room": "$response.body#/name"}
    targets = {"GetRoom": "get_room", "CloseRoom": "close_room", "DeleteRoom": "delete_room",
               "RoomEvents": "room_events", "ComplianceReport": "compliance_report",
               "PublishMedia": "whip_publish", "PlayMedia": "whep_play"}
    return {name: {"operationId": operation, "parameters": room} for name, operation in targets.items()}


def _admin_op(operation_id: str, summary: str, responses: Json, **extra: Any) -> Json:
    operation: Json = {"tags": ["Rooms"], "operationId": operation_id, "summary": summary,
                       "security": ADMIN_SECURITY, "responses": responses}
    operation.update(extra)
    return operation


def _json_request(schema: str, required: bool = True) -> Json:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema)}}}


def _paths(config: FinrtcConfig) -> Json:
    auth_errors = {"401": UNAUTHORIZED, "403": FORBIDDEN}
    whip_endpoint, whip_session = _media_operations("whip")
    whep_endpoint, whep_session = _media_operations("whep")
    paths: Json = {
        "/healthz": {"get": {
            "tags": ["Operations"], "operationId": "healthz", "security": [],
            "summary": "Liveness", "responses": {"200": _json("Alive.", {
                "type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}})},
        }},
        "/readyz": {"get": {
            "tags": ["Operations"], "operationId": "readyz", "security": [],
            "summary": "Readiness (false while starting or draining)",
            "responses": {
                "200": _json("Ready.", {"type": "object", "required": ["ready"],
                                        "properties": {"ready": {"const": True}}}),
                "503": _json("Not ready.", {"type": "object", "required": ["ready", "reason"],
                                            "properties": {"ready": {"const": False},
                                                           "reason": {"type": "string"}}}),
            },
        }},
        "/metrics": {"get": {
            "tags": ["Operations"], "operationId": "metrics", "security": [],
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": "Prometheus text exposition format.",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
        "/openapi.json": {"get": {
            "tags": ["Operations"], "operationId": "openapi", "security": [],
            "summary": "This document",
            "responses": {"200": _json("OpenAPI 3.1 document.", {"type": "object"})},
        }},
        "/v1/rooms": {
            "post": _admin_op("create_room", "Create a room with its policy", {
                "201": {**_json("Created.", _ref("Room"), {"Location": _header("/v1/rooms/{name}")}),
                        "links": _room_links()},
                "400": BAD_REQUEST, **auth_errors,
                "409": _error("A room with this name exists."), "413": TOO_LARGE, "415": UNSUPPORTED,
                "503": UNAVAILABLE,
            }, requestBody=_json_request("CreateRoomRequest")),
            "get": _admin_op("list_rooms", "List rooms (a room-scoped admin token sees its room)", {
                "200": _json("The rooms.", _ref("RoomList")), **auth_errors}),
        },
        "/v1/rooms/{room}": {
            "parameters": [ROOM_PARAM],
            "get": _admin_op("get_room", "A room: policy, state, participants and their tracks", {
                "200": _json("The room.", _ref("Room")), "400": BAD_REQUEST, **auth_errors,
                "404": NOT_FOUND}),
            "delete": _admin_op("delete_room", "Close a room (same as POST .../close)", {
                "200": _json("Closed; its recording is sealed.", _ref("ClosedRoom")),
                "400": BAD_REQUEST, **auth_errors, "404": NOT_FOUND}),
        },
        "/v1/rooms/{room}/close": {
            "parameters": [ROOM_PARAM],
            "post": _admin_op("close_room", "Close a room: end every session and seal the recording", {
                "200": _json("Closed; its recording is sealed.", _ref("ClosedRoom")),
                "400": BAD_REQUEST, **auth_errors, "404": NOT_FOUND, "413": TOO_LARGE,
                "415": UNSUPPORTED}, requestBody=_json_request("CloseRoomRequest", required=False)),
        },
        "/v1/rooms/{room}/participants/{identity}": {
            "parameters": [ROOM_PARAM, IDENTITY_PARAM],
            "delete": _admin_op("remove_participant", "Remove a participant (ends its sessions)", {
                "204": {"description": "Removed."}, "400": BAD_REQUEST, **auth_errors,
                "404": NOT_FOUND}),
        },
        "/v1/tokens": {
            "post": _admin_op("create_token", "Mint a participant token for a backend", {
                "201": _json("The token.", _ref("TokenResponse")), "400": BAD_REQUEST, **auth_errors,
                "413": TOO_LARGE, "415": UNSUPPORTED}, requestBody=_json_request("TokenRequest")),
        },
        "/v1/rooms/{room}/events": {
            "parameters": [ROOM_PARAM],
            "get": {
                "tags": ["Events"], "operationId": "room_events", "security": PARTICIPANT_SECURITY,
                "summary": "WebSocket stream of the room's events (what the token's role may see)",
                "description": "Upgrade to a WebSocket. The first message is {type: hello, room, role, "
                               "replay_complete}; then one RoomEvent per message. Reconnect with "
                               "?after=<last seq> to resume without losses within the replay window. "
                               "Close code 4008: the client was too slow.",
                "parameters": [
                    {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "The access token, for clients that cannot set headers."},
                    {"name": "after", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}},
                ],
                "responses": {
                    "101": {"description": "Switching to the WebSocket protocol; messages are RoomEvent.",
                            "content": {"application/json": {"schema": _ref("RoomEvent")}}},
                    "400": BAD_REQUEST, **auth_errors, "404": NOT_FOUND,
                    "426": _error("Not a WebSocket upgrade request.",
                                  {"Upgrade": _header("websocket")}),
                },
            },
        },
        "/v1/rooms/{room}/compliance": {
            "parameters": [ROOM_PARAM],
            "get": {
                "tags": ["Compliance"], "operationId": "compliance_report",
                "security": [*ADMIN_SECURITY, *PARTICIPANT_SECURITY],
                "summary": "The room's compliance report (agents, observers, admins)",
                "responses": {
                    "200": {"description": "The report; HTML when Accept prefers text/html.",
                            "content": {"application/json": {"schema": _ref("ComplianceReport")},
                                        "text/html": {"schema": {"type": "string"}}}},
                    "400": BAD_REQUEST, **auth_errors,
                    "404": _error("No such room, and no final report of a closed one."),
                    "409": _error("The room exists but its policy names no compliance script."),
                },
            },
        },
        "/v1/rooms/{room}/consent": {
            "parameters": [ROOM_PARAM],
            "post": {
                "tags": ["Compliance"], "operationId": "give_consent", "security": PARTICIPANT_SECURITY,
                "summary": "The customer gives (or withdraws) consent",
                "requestBody": _json_request("ConsentRequest", required=False),
                "responses": {
                    "200": _json("The consent state.", _ref("ConsentState")),
                    "400": BAD_REQUEST, **auth_errors,
                    "404": _error("No such room."),
                    "409": _error("The room exists but has no live compliance session."),
                    "413": TOO_LARGE, "415": UNSUPPORTED,
                },
            },
        },
        "/whip/{room}": whip_endpoint,
        "/whip/{room}/{resource}": whip_session,
        "/whep/{room}": whep_endpoint,
        "/whep/{room}/{resource}": whep_session,
    }
    if config.identity.enabled:
        paths.update(_identity_paths(auth_errors))
        if config.identity.voiceprints:
            paths.update(_voiceprint_paths(auth_errors))
    if config.server.demo_page:
        operations = {"/": "demo_page", "/demo.js": "demo_script", "/demo-i18n.js": "demo_translations"}
        for path, media in (
            ("/", "text/html"), ("/demo.js", "application/javascript"),
            ("/demo-i18n.js", "application/javascript"),
        ):
            paths[path] = {"get": {
                "tags": ["Development"], "operationId": operations[path],
                "security": [], "summary": "Demo page (server.demo_page)",
                "responses": {"200": {"description": "Static file.",
                                      "content": {media: {"schema": {"type": "string"}}}}},
            }}
    if config.server.dev_token_endpoint:
        paths["/dev/token"] = {"post": {
            "tags": ["Development"], "operationId": "dev_token", "security": [],
            "summary": "Mint a 4-hour participant token without credentials (server.dev_token_endpoint)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["room", "identity", "role"], "additionalProperties": False,
                "properties": {"room": {"type": "string", "pattern": NAME_PATTERN},
                               "identity": {"type": "string", "pattern": NAME_PATTERN},
                               "role": _ref("Role")}}}}},
            "responses": {"200": _json("The token.", {
                "type": "object", "required": ["token", "room", "identity", "role"],
                "properties": {"token": {"type": "string"}, "room": {"type": "string"},
                               "identity": {"type": "string"}, "role": _ref("Role")}}),
                "400": BAD_REQUEST, "413": TOO_LARGE, "415": UNSUPPORTED},
        }}
    return paths


def _document_name_checks(paths: Json) -> None:
    """Every operation under a path with a name parameter answers 400 for a malformed name (the
    error middleware checks them before any handler runs), and one on a room 410 once the room
    is closed."""
    for template, item in paths.items():
        if "{room}" not in template and "{identity}" not in template:
            continue
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
                operation["responses"].setdefault("400", BAD_REQUEST)
                if "{room}" in template and method != "options":
                    operation["responses"].setdefault("410", GONE)


def _identity_paths(auth_errors: Json) -> Json:
    no_call = _error("The room has no live call (identity checks run during a call), a challenge is "
                     "already running for the participant, or the room is not recorded.")
    return {
        "/v1/rooms/{room}/identity": {"parameters": [ROOM_PARAM], "get": {
            "tags": ["Identity"], "operationId": "identity_report",
            "security": [*ADMIN_SECURITY, *PARTICIPANT_SECURITY],
            "summary": "Identity check results of the room's call (agents, observers, admins)",
            "responses": {
                "200": {"description": "The report; HTML when Accept prefers text/html.",
                        "content": {"application/json": {"schema": _ref("IdentityReport")},
                                    "text/html": {"schema": {"type": "string"}}}},
                **auth_errors, "404": _error("The room has had no call with identity checks."),
            },
        }},
        "/v1/rooms/{room}/identity/liveness": {"parameters": [ROOM_PARAM], "post": {
            "tags": ["Identity"], "operationId": "start_liveness_challenge",
            "security": [*ADMIN_SECURITY, *PARTICIPANT_SECURITY],
            "summary": "Start a liveness challenge for a participant (agents, admins); prompts and "
                       "results arrive as identity.* room events",
            "requestBody": _json_request("LivenessRequest"),
            "responses": {"201": _json("The challenge started.", _ref("LivenessChallenge")),
                          "400": BAD_REQUEST, **auth_errors, "409": no_call},
        }},
        "/v1/rooms/{room}/identity/reference": {"parameters": [ROOM_PARAM], "post": {
            "tags": ["Identity"], "operationId": "upload_identity_reference",
            "security": [*ADMIN_SECURITY, *PARTICIPANT_SECURITY],
            "summary": "Upload the ID card's portrait (agents, admins); stored only encrypted in the "
                       "call's archive, live frames are compared with it",
            "requestBody": {"required": True, "content": {
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "201": _json("The portrait is stored and in use.", _ref("IdentityReference")),
                "400": _error("The image does not decode or shows no face."), **auth_errors,
                "409": no_call,
                "413": _error("The portrait is larger than identity.max_reference_bytes."),
                "415": _error("The body is not a JPEG or PNG image."),
            },
        }},
    }


def _voiceprint_paths(auth_errors: Json) -> Json:
    return {
        "/v1/rooms/{room}/identity/voiceprint": {"parameters": [ROOM_PARAM], "post": {
            "tags": ["Identity"], "operationId": "voiceprint",
            "security": [*ADMIN_SECURITY, *PARTICIPANT_SECURITY],
            "summary": "Enrol a customer's voiceprint from the call or an uploaded WAV clip, or verify "
                       "the call's voice against an enrolled one (agents, admins); the voiceprint is "
                       "stored only encrypted in the call's archive",
            "parameters": [{"name": "participant", "in": "query", "required": False,
                            "schema": {"type": "string"},
                            "description": "With an audio/wav body: the customer the clip is of."}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("VoiceprintRequest")},
                "audio/wav": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "201": _json("The clip's voiceprint is sealed and enrolled.", _ref("VoiceprintEnrolment")),
                "202": _json("Collecting the participant's speech.", _ref("VoiceprintState")),
                "400": _error("A malformed request, an unreadable WAV clip or too little speech in it."),
                **auth_errors,
                "404": _error("No voiceprint is enrolled for that customer or enrolment (or its call's "
                              "archive was purged)."),
                "409": _error("The room has no live call, is not recorded, or a voiceprint check of "
                              "the participant is already running."),
                "413": _error("The clip is larger than identity.max_voice_clip_bytes."),
                "415": _error("The body is neither JSON nor a WAV file."),
            },
        }},
    }


def build_openapi(config: FinrtcConfig) -> Json:
    paths = _paths(config)
    _document_name_checks(paths)
    document: Json = {
        "openapi": "3.1.0",
        "info": {
            "title": "finrtc",
            "version": __version__,
            "description": "Room API, WHIP/WHEP media sessions and operational endpoints of a "
                           "finrtc media server. Errors are always JSON: {error: {code, message}}.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in
                 ("Rooms", "WHIP", "WHEP", "Events", "Compliance", "Identity", "Operations",
                  "Development")],
        "paths": paths,
        "components": {
            "schemas": _schemas(config),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "basic",
                           "description": "An API key id and its secret from auth.api_keys."},
                "adminToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": "HS256 JWT with admin: true (room claim: that room "
                                              "only). Signed with the API secret, or with an API "
                                              "key's secret named in the kid header."},
                "participantToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                     "description": "HS256 JWT for one room and identity, from "
                                                    "POST /v1/tokens or the backend."},
            },
        },
        "security": ADMIN_SECURITY,
    }
    return copy.deepcopy(document)
