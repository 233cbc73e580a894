"""Presets: YAML files of config values, shipped in the package's presets/ folder or given by path."""

from pathlib import Path

import yaml

from nashcli.errors import NashError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


def available_presets() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def preset_path(name_or_path: str) -> Path:
    """A preset name (`small`) or a path to a YAML file (`my/exp.yaml`)."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise NashError(f"preset file {name_or_path!r} does not exist")
        return candidate
    path = PRESETS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise NashError(f"unknown preset {name_or_path!r}: available presets are {', '.join(available_presets())}")
    return path


def load_preset(name_or_path: str) -> dict:
    """The preset's values as a nested dict (not yet validated)."""
    path = preset_path(name_or_path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise NashError(f"preset {path}{where}: invalid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(tree, dict):
        raise NashError(f"preset {path}: expected a mapping of config sections, got {type(tree).__name__}")
    return tree
