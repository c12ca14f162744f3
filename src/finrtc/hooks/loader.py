"""Turns the YAML `hooks:` list into hook factories: built-in names or import paths.

Loading happens once at start-up; a bad hook is a config error naming `hooks[i]`, never a
failure on the first frame.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from finrtc.config import HookSpec
from finrtc.config_base import format_validation_error
from finrtc.errors import ConfigError
from finrtc.hooks.chain import HookFactory
from finrtc.hooks.contract import HOOK_API_VERSION, FailurePolicy, Hook, Stage
from finrtc.model import MediaKind

BUILTIN_HOOKS: dict[str, str] = {
    "visible_watermark": "finrtc.hooks.builtin.visible_watermark:VisibleWatermark",
    "forensic_watermark": "finrtc.hooks.builtin.forensic_watermark:ForensicWatermark",
    "face_presence": "finrtc.hooks.builtin.face_presence:FacePresence",
}


def _import_file(path: Path) -> object:
    module_name = f"finrtc_plugin_{path.stem}_{abs(hash(str(path))):x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def resolve_hook_class(use: str, base_dir: Path | None = None) -> type[Hook]:
    """Find the class named by `use`: a built-in name, `pkg.module:Class` or `file.py:Class`."""
    target = BUILTIN_HOOKS.get(use, use)
    if ":" in target:
        module_part, _, attribute = target.partition(":")
    elif "." in target:
        module_part, _, attribute = target.rpartition(".")
    else:
        known = ", ".join(sorted(BUILTIN_HOOKS))
        raise ConfigError(f"unknown hook {use!r}: use a built-in name ({known}) or 'module:Class'")
    try:
        if module_part.endswith(".py"):
            file_path = Path(module_part)
            if not file_path.is_absolute() and base_dir is not None:
                file_path = base_dir / file_path
            module = _import_file(file_path)
        else:
            module = importlib.import_module(module_part)
    except (ImportError, OSError) as error:
        raise ConfigError(f"cannot import hook module {module_part!r}: {error}") from None
    hook_class = getattr(module, attribute, None)
    if not (isinstance(hook_class, type) and issubclass(hook_class, Hook)):
        raise ConfigError(f"{target!r} is not a finrtc Hook subclass")
    check_declaration(hook_class)
    return hook_class


def check_declaration(hook_class: type[Hook]) -> None:
    """Refuse a hook whose class attributes do not declare the contract completely."""
    problems = []
    if not isinstance(getattr(hook_class, "name", None), str) or not hook_class.name:
        problems.append("a non-empty `name`")
    kinds = getattr(hook_class, "kinds", None)
    if not isinstance(kinds, frozenset) or not kinds or not all(isinstance(k, MediaKind) for k in kinds):
        problems.append("`kinds`, a non-empty frozenset of MediaKind")
    if not isinstance(getattr(hook_class, "stage", None), Stage):
        problems.append("`stage`, a Stage")
    if not isinstance(hook_class.failure_policy, FailurePolicy):
        problems.append("`failure_policy`, a FailurePolicy")
    if not (isinstance(hook_class.budget_ms, int | float) and hook_class.budget_ms > 0):
        problems.append("a positive `budget_ms`")
    if problems:
        raise ConfigError(f"hook class {hook_class.__qualname__} must declare " + "; ".join(problems))
    if hook_class.api_version != HOOK_API_VERSION:
        raise ConfigError(
            f"hook {hook_class.name!r} was written for hook API v{hook_class.api_version}; "
            f"this finrtc provides v{HOOK_API_VERSION}"
        )


def load_hooks(specs: Sequence[HookSpec], base_dir: Path | None = None) -> list[HookFactory]:
    factories = []
    for position, spec in enumerate(specs):
        if not spec.enabled:
            continue
        try:
            hook_class = resolve_hook_class(spec.use, base_dir)
        except ConfigError as error:
            raise ConfigError(f"hooks[{position}] ({spec.use}): {error}") from None
        try:
            options = hook_class.options_model.model_validate(spec.options)
        except ValidationError as error:
            details = format_validation_error(error, prefix=f"hooks[{position}].options")
            raise ConfigError(f"hooks[{position}] ({spec.use}) has invalid options:\n{details}") from None
        factories.append(HookFactory(hook_class, options, position))
    return factories
