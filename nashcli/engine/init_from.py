"""`init_from`: start a run from existing weights (a nash run or checkpoint, or hf:GPT-2 weights)
with a fresh optimizer and schedule. The model's shape comes from the weights."""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from torch import nn

from nashcli.config import ModelConfig, NashConfig
from nashcli.engine.checkpoint import checkpoint_config, load_model_weights, resolve_checkpoint_dir
from nashcli.errors import NashError

HF_PREFIX = "hf:"


@dataclass
class InitialWeights:
    source: str  # as given in config.init_from
    model_config: ModelConfig  # the shape the weights have
    checkpoint_dir: Optional[Path] = None  # a nash checkpoint folder, or
    state_dict: Optional[dict] = None  # weights already in nash's layout (hf:)

    def load_into(self, model: nn.Module) -> None:
        if self.checkpoint_dir is not None:
            load_model_weights(model, self.checkpoint_dir)
        else:
            model.load_state_dict(self.state_dict)


def resolve_initial_weights(init_from: str, runs_dir: Path) -> InitialWeights:
    """The weights `init_from` names: hf:PATH_OR_ID, a checkpoint folder, a run folder or run name
    (its `best` checkpoint if it has one, else `last`)."""
    if init_from.startswith(HF_PREFIX):
        from nashcli.model.hf import load_hf_gpt2

        model_config, state_dict = load_hf_gpt2(init_from[len(HF_PREFIX) :])
        return InitialWeights(init_from, model_config, state_dict=state_dict)
    try:
        checkpoint_dir = resolve_checkpoint_dir(init_from, "best", runs_dir)
    except NashError:  # no `best` (never evaluated): fall back to `last`, with its error if that fails too
        checkpoint_dir = resolve_checkpoint_dir(init_from, "last", runs_dir)
    return InitialWeights(init_from, checkpoint_config(checkpoint_dir).model, checkpoint_dir=checkpoint_dir)


def with_weights_shape(config: NashConfig, weights: InitialWeights) -> tuple[NashConfig, list[str]]:
    """`config` with its model section replaced by the shape of the weights, and notes saying so.

    Dropout is not part of the shape: an explicitly set model.dropout is kept, otherwise the value
    the weights were trained with.
    """
    model = weights.model_config
    if "dropout" in config.model.model_fields_set:
        model = model.model_copy(update={"dropout": config.model.dropout})
    notes = []
    changed = [
        f"{key}={getattr(config.model, key)}->{getattr(model, key)}"
        for key in ModelConfig.model_fields
        if key in config.model.model_fields_set and getattr(config.model, key) != getattr(model, key)
    ]
    description = f"{model.n_layers} layers, {model.n_heads} heads, {model.d_model} wide, context {model.max_seq_len}"
    notes.append(f"model shape from {weights.source}: {description}")
    if changed:
        notes.append(f"model settings replaced by the weights' own: {', '.join(changed)}")
    return config.model_copy(update={"model": model}), notes
