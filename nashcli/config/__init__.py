"""Config models, presets and overrides: `resolve_config` is what the commands call."""

from typing import Optional

from nashcli.config.models import DataConfig, MetricsConfig, ModelConfig, NashConfig, TrainConfig
from nashcli.config.overrides import apply_overrides, build_config, parse_override
from nashcli.config.presets import load_preset


def resolve_config(preset: Optional[str], overrides: list[str]) -> NashConfig:
    """Preset values, then `--set` overrides in order, validated once."""
    tree = load_preset(preset) if preset else {}
    tree = apply_overrides(tree, [parse_override(text) for text in overrides])
    return build_config(tree, source=f"preset {preset!r}" if preset else "config")


__all__ = ["DataConfig", "MetricsConfig", "ModelConfig", "NashConfig", "TrainConfig", "resolve_config"]
