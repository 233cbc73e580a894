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
    return read_yaml_tree(preset_path(name_or_path), "preset")


def read_yaml_tree(path: Path, what: str) -> dict:
    """A YAML file holding a mapping of config sections, e.g. a preset or a run's config.yaml;
    NashError naming the file (and line) when it is not one."""
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise NashError(f"{what} {path} is not UTF-8 text: is it the right file?") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(error, "problem", None) or error).split())  # one line
        raise NashError(f"{what} {path}{where}: invalid YAML ({problem})") from None
    if not isinstance(tree, dict):
        raise NashError(f"{what} {path}: expected a mapping of config sections, got {type(tree).__name__}")
    return tree
