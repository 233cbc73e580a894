"""Config models, presets and overrides: `resolve_config` is what the commands call."""

from pathlib import Path
from typing import Any, Optional

from nashcli.config.models import DataConfig, MetricsConfig, ModelConfig, NashConfig, TrainConfig
from nashcli.config.overrides import apply_overrides, build_config, parse_override
from nashcli.config.presets import load_preset, read_yaml_tree


# A command-line option that sets a config key, with its typed value: {"--run": ("name", "2024")}.
Options = dict[str, tuple[str, Any]]


def resolve_config(preset: Optional[str], overrides: list[str], options: Optional[Options] = None) -> NashConfig:
    """Preset values, then `--set` overrides in order, then `options` (typed values of options such
    as --run, never re-read as YAML), validated once."""
    tree = load_preset(preset) if preset else {}
    return override_config(tree, overrides, options, source=f"preset {preset!r}" if preset else "defaults")


def override_config(
    tree: dict, overrides: list[str], options: Optional[Options] = None, source: str = "config"
) -> NashConfig:
    """`tree` with `--set` overrides and then `options` (None values skipped) applied, validated once.
    An invalid value is reported with where it came from: its --set, its option, or `source`."""
    parsed = [parse_override(text) for text in overrides]
    chosen = {option: key_value for option, key_value in (options or {}).items() if key_value[1] is not None}
    tree = apply_overrides(apply_overrides(tree, parsed), list(chosen.values()))
    origins = {key: f"--set {key}" for key, _ in parsed} | {key: option for option, (key, _) in chosen.items()}
    return build_config(tree, source=lambda location: _origin(location, origins, source))


def load_config_file(path: Path) -> NashConfig:
    """A whole config saved as YAML, such as a run's config.yaml."""
    return build_config(read_yaml_tree(path, "config"), source=lambda location: str(path))


def _origin(location: str, origins: dict[str, str], source: str) -> str:
    """Where the failing value came from: the override of that key (or of a section above it); for a
    cross-field check of a section, the source and every override inside that section."""
    for key in sorted(origins, key=len, reverse=True):
        if location == key or location.startswith(key + ".") or location.startswith(key + "["):
            return origins[key]
    inside = [origin for key, origin in origins.items() if not location or key.startswith(location + ".")]
    return " with ".join([source, ", ".join(inside)]) if inside else source


__all__ = [
    "DataConfig",
    "MetricsConfig",
    "ModelConfig",
    "NashConfig",
    "TrainConfig",
    "load_config_file",
    "override_config",
    "resolve_config",
]
