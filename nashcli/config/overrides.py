"""Dotted `--set KEY=VALUE` overrides and turning pydantic errors into one-line messages.

Pure functions on plain dictionaries; validation happens once, in `build_config`.
"""

import copy
import difflib
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

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
    """Return a copy of `tree` with each dotted key set; unknown keys are refused with a suggestion.

    A section that is a choice of settings (train.optimizer, chosen by its `name`) takes the keys of
    the member its name chooses; setting the name to another member drops the keys the new one lacks
    (switching from muon to adamw leaves no muon settings behind).
    """
    result = copy.deepcopy(tree)
    for key, value in overrides:
        parts = key.split(".")
        model: type[BaseModel] = NashConfig
        node, choice = result, None
        for depth, part in enumerate(parts):
            fields = model.model_fields
            if part not in fields:
                prefix = ".".join(parts[:depth])
                raise NashError(_unknown_key_message(key, prefix, list(fields), choice))
            if depth == len(parts) - 1:
                node[part] = value
                if choice is not None and part == choice.discriminator and value in choice.members:
                    kept = choice.members[value].model_fields
                    for name in [name for name in node if name not in kept]:
                        del node[name]
                break
            choice = section_choice(fields[part])
            if choice is None:
                raise NashError(f"unknown config key {key!r}: {'.'.join(parts[:depth + 1])!r} is a value, not a section")
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise NashError(f"config key {'.'.join(parts[:depth + 1])!r} is not a section")
            model = choice.chosen(node, ".".join(parts[: depth + 1]))
            choice = choice if len(choice.members) > 1 else None
    return result


@dataclass(frozen=True)
class SectionChoice:
    """The settings classes a config section can hold: one, or several told apart by `discriminator`."""

    members: dict[str, type[BaseModel]]
    discriminator: Optional[str]
    default_member: str

    def chosen(self, node: dict, dotted: str) -> type[BaseModel]:
        if self.discriminator is None:
            return self.members[self.default_member]
        name = node.get(self.discriminator, self.default_member)
        if name not in self.members:
            raise NashError(
                f"{dotted}.{self.discriminator}={name!r} is not one of {', '.join(self.members)}"
            )
        return self.members[name]


def section_choice(field: FieldInfo) -> Optional[SectionChoice]:
    """What a field holds if it is a section (a settings class or a discriminated union of them)."""
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return SectionChoice({"": annotation}, None, "")
    if isinstance(field.discriminator, str) and get_origin(annotation) is Union:
        members = {}
        for member in get_args(annotation):
            tag = member.model_fields[field.discriminator].default
            members[tag] = member
        default_tag = getattr(field.default, field.discriminator, next(iter(members)))
        return SectionChoice(members, field.discriminator, default_tag)
    return None


def _unknown_key_message(key: str, prefix: str, valid_names: list[str], choice: Optional[SectionChoice] = None) -> str:
    """Suggest the closest valid name at the level that went wrong, keeping the rest of the path."""
    parts = key.split(".")
    depth = len(prefix.split(".")) if prefix else 0
    if choice is not None:  # a key of another member: say which name to choose
        owners = [tag for tag, member in choice.members.items() if parts[depth] in member.model_fields]
        if owners:
            return (
                f"config key {key!r} is a setting of {prefix}.{choice.discriminator}={owners[0]}: "
                f"set --set {prefix}.{choice.discriminator}={owners[0]} before it"
            )
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
    first = error.errors()[0]
    location = _location(first)[0]
    if first["type"] == "union_tag_invalid":  # the name that chooses a member is the wrong value
        location += "." + first["ctx"]["discriminator"].strip("'")
    return location


def _location(problem: dict) -> tuple[str, Optional[type[BaseModel]]]:
    """The dotted key of a pydantic problem, without the member tags pydantic puts inside a
    discriminated union's path (train.optimizer.muon.lr is train.optimizer.lr), and the settings
    class that holds its last key."""
    dotted, model = "", NashConfig
    parts = list(problem["loc"])
    while parts:
        part = parts.pop(0)
        dotted += f"[{part}]" if isinstance(part, int) else f".{part}"
        field = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        choice = section_choice(field) if field is not None else None
        model = None
        if choice is not None:
            if choice.discriminator is not None and parts and parts[0] in choice.members:
                model = choice.members[parts.pop(0)]
            elif choice.discriminator is None:
                model = choice.members[""]
    return dotted.lstrip("."), model


def describe_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    location = error_location(error)
    if first["type"] == "extra_forbidden":
        parent, _, _ = location.rpartition(".")
        section = _location({"loc": first["loc"][:-1]})[1] or NashConfig
        return _unknown_key_message(location, parent, list(section.model_fields))
    if first["type"] == "union_tag_invalid":
        return f"{location}={first['ctx']['tag']!r}: must be one of {first['ctx']['expected_tags']}"
    message = first["msg"].removeprefix("Value error, ")
    if not location:  # a cross-field check on the root
        return message
    if first["type"].startswith("value_error") and location.count(".") == 0:
        return message  # a section's cross-field check already names its keys
    return f"{location}={first['input']!r}: {message}"
