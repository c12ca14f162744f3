"""The tree's data flow as import rules, so a shortcut between layers fails here, not in review.

signaling -> room -> participant -> media (track pipeline) -> hooks / archive. The lower layers
(media, archive, compliance, room) never reach up into signaling; aiortc and aioice stay inside
the media layer, behind its typed adapters.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "finrtc"
LOWER_LAYERS = ("media", "archive", "compliance", "room", "participant", "session", "model")
MEDIA_STACK = ("aiortc", "aioice")
# finrtc.hooks.testing is the plug-in authors' test kit: it plays frames through an aiortc track.
MEDIA_STACK_ALLOWED = ("finrtc.media", "finrtc.hooks.testing")


def _modules() -> dict[str, list[str]]:
    """Module name -> the absolute modules it imports (at any depth, TYPE_CHECKING included)."""
    found: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        imported: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.append(node.module)
            elif isinstance(node, ast.Import):
                imported.extend(alias.name for alias in node.names)
        found[name] = imported
    return found


MODULES = _modules()


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_walk_found_the_tree() -> None:
    assert {"finrtc.room", "finrtc.media.pipeline", "finrtc.signaling.server"} <= set(MODULES)


@pytest.mark.parametrize("layer", LOWER_LAYERS)
def test_lower_layers_never_import_signaling(layer: str) -> None:
    offenders = {
        module: [name for name in imported if name.startswith("finrtc.signaling")]
        for module, imported in MODULES.items()
        if _area(module) == layer
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_the_media_stack_is_imported_only_by_the_media_layer() -> None:
    offenders = {
        module: [name for name in imported if name.split(".")[0] in MEDIA_STACK]
        for module, imported in MODULES.items()
        if not module.startswith(MEDIA_STACK_ALLOWED)
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_media_archive_and_compliance_do_not_import_each_other() -> None:
    isolated = {"media", "archive", "compliance"}
    crossings = sorted(
        (module, name)
        for module, imported in MODULES.items()
        for name in imported
        if _area(module) in isolated
        and name.startswith("finrtc.")
        and _area(name) in isolated
        and _area(name) != _area(module)
    )
    assert crossings == []


# Private names of aiortc / aioice that finrtc patches; each one may appear only in the module
# that gathers the patches (with a version check and a test per patch).
PATCH_MODULE = SRC / "media" / "aiortc_patches.py"
PRIVATE_MEDIA_STACK = re.compile(
    r"_RTCRtp\w+__\w+|_send_rtcp_pli|_send_keyframe|_remove_frame|_create_ssl_context"
    r"|\.track\._queue|\b_data\b|aioice\.ice\.get_host_addresses"
)


def test_aiortc_internals_are_touched_only_in_the_patch_module() -> None:
    offenders = {
        str(path.relative_to(SRC)): sorted(set(PRIVATE_MEDIA_STACK.findall(path.read_text(encoding="utf-8"))))
        for path in SRC.rglob("*.py")
        if path != PATCH_MODULE
    }
    assert {path: names for path, names in offenders.items() if names} == {}
    assert PRIVATE_MEDIA_STACK.search(PATCH_MODULE.read_text(encoding="utf-8"))
