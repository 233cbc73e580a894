"""Dotted `--set KEY=VALUE` overrides and turning pydantic errors into one-line messages.

Pure functions on plain dictionaries; validation happens once, in `build_config`.
"""

import copy
import difflib
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ValidationError

from nashcli.config.models import NashConfig
from nashcli.errors import NashError


def parse_override(text: str) -> tuple[str, Any]:
    """Split `train.lr=1e-4` into ("train.lr", 1e-4); the value is parsed as a YAML scalar or list.

    >>> parse_override("train.betas=[0.9, 0.99]")
    ('train.betas', [0.9, 0.99])
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise NashError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not valid YAML: let pydantic judge it as a string
    # YAML reads "1e-4" as a string; pydantic's number fields accept numeric strings, so leave it.
    return key, value


def apply_overrides(tree: dict, overrides: list[tuple[str, Any]]) -> dict:
    """Return a copy of `tree` with each dotted key set; unknown keys are refused with a suggestion."""
    result = copy.deepcopy(tree)
    for key, value in overrides:
        parts = key.split(".")
        model: type[BaseModel] = NashConfig
        node = result
        for depth, part in enumerate(parts):
            fields = model.model_fields
            if part not in fields:
                prefix = ".".join(parts[:depth])
                raise NashError(_unknown_key_message(key, prefix, list(fields)))
            annotation = fields[part].annotation
            is_last = depth == len(parts) - 1
            if is_last:
                node[part] = value
            elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise NashError(f"config key {'.'.join(parts[:depth + 1])!r} is not a section")
                model = annotation
            else:
                raise NashError(f"unknown config key {key!r}: {'.'.join(parts[:depth + 1])!r} is a value, not a section")
    return result


def _unknown_key_message(key: str, prefix: str, valid_names: list[str]) -> str:
    """Suggest the closest valid name at the level that went wrong, keeping the rest of the path."""
    parts = key.split(".")
    depth = len(prefix.split(".")) if prefix else 0
    close = difflib.get_close_matches(parts[depth], valid_names, n=1, cutoff=0.6)
    if close:
        suggestion = ".".join(parts[:depth] + close + parts[depth + 1 :])
        return f"unknown config key {key!r}: did you mean {suggestion!r}?"
    full_names = [f"{prefix}.{name}" if prefix else name for name in valid_names]
    return f"unknown config key {key!r}: valid keys here are {', '.join(full_names)}"


def build_config(tree: dict, source: "str | Callable[[str], str]" = "config") -> NashConfig:
    """Validate a config tree; the first problem becomes a one-line NashError naming key, value and rule.

    source: where the values came from, or a function from the failing dotted key to that.
    """
    try:
        return NashConfig.model_validate(tree)
    except ValidationError as error:
        origin = source(error_location(error)) if callable(source) else source
        raise NashError(f"{origin}: {describe_validation_error(error)}") from None


def error_location(error: ValidationError) -> str:
    """The dotted key of the first problem, e.g. "train.betas[1]" ("" for a whole-config check)."""
    parts = error.errors()[0]["loc"]
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".")


def describe_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    location = error_location(error)
    if first["type"] == "extra_forbidden":
        parent, _, _ = location.rpartition(".")
        section = NashConfig
        for part in parent.split(".") if parent else []:
            section = section.model_fields[part].annotation
        return _unknown_key_message(location, parent, list(section.model_fields))
    message = first["msg"].removeprefix("Value error, ")
    if not location:  # a cross-field check on the root
        return message
    if first["type"].startswith("value_error") and location.count(".") == 0:
        return message  # a section's cross-field check already names its keys
    return f"{location}={first['input']!r}: {message}"
