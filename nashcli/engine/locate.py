"""Where a command's inputs are: one entry per question.

    find_checkpoint(source, which)   which checkpoint folder: from a checkpoint, a run folder or a run name
    find_weights(source, which)      which weights `--init-from`, eval, generate and export start from
    find_resume(run)                 which run folder, checkpoint and config `--resume` continues

Only lookups happen here (and reading what they find); claiming a folder to write is in run_folder.py.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from torch import nn

from nashcli.config import NashConfig
from nashcli.engine.checkpoint import MODEL_FILE, STATE_FILE, existing_checkpoint
from nashcli.engine.checkpoint_reading import checkpoint_config, load_model_weights, read_checkpoint_meta
from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout

HF_PREFIX = "hf:"
CHECKPOINT_CHOICES = ("best", "last")


@dataclass
class Weights:
    """Model weights found by `find_weights`, read only when loaded into a model."""

    source: str  # as the user gave it
    config: NashConfig  # the config they were trained with (hf: the GPT-2 shape, defaults elsewhere)
    checkpoint_dir: Optional[Path] = None  # a nash checkpoint folder, or
    state_dict: Optional[dict] = None  # weights already in nash's layout (hf:)

    def load_into(self, model: nn.Module) -> None:
        if self.checkpoint_dir is not None:
            load_model_weights(model, self.checkpoint_dir)
        else:
            model.load_state_dict(self.state_dict)


@dataclass
class ResumePoint:
    """A run to continue: its folder, the checkpoint to continue from, and that checkpoint's config."""

    layout: RunLayout
    checkpoint_dir: Path
    config: NashConfig
    step: int  # the steps the run has done


def find_checkpoint(source: "str | Path", which: Optional[str] = None, runs_dir: Path = Path("runs")) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder, or a run name under `runs_dir`.

    which: "best" or "last" for a run; None takes best if the run has one, else last.
    """
    if which is not None and which not in CHECKPOINT_CHOICES:
        raise NashError(f"--checkpoint {which!r}: choose best or last")
    path = Path(source)
    if (path / MODEL_FILE).is_file():
        return path
    if path.is_file():
        raise NashError(
            f"{path} is a file: give a nash run folder or checkpoint folder (with {MODEL_FILE} and {STATE_FILE})"
        )
    layout = RunLayout(path) if (path / "checkpoints").is_dir() else RunLayout.find(source, runs_dir)
    for name in [which] if which else CHECKPOINT_CHOICES:
        found = existing_checkpoint(layout.checkpoint_dir(name))
        if found is not None:
            return found
    available = sorted(p.name for p in layout.checkpoints_dir.glob("*") if not p.name.startswith("."))
    raise NashError(
        f"run {layout.root} has no {repr(which) if which else 'best or last'} checkpoint; "
        + (f"it has: {', '.join(available)}" if available else "it has not saved one yet")
    )


def find_weights(source: "str | Path", which: Optional[str] = None, runs_dir: Path = Path("runs")) -> Weights:
    """The weights `source` names: hf:PATH_OR_ID (GPT-2 in the Hugging Face format), or a nash
    checkpoint as `find_checkpoint` finds it. hf: weights are read at once; a checkpoint's when loaded."""
    source = str(source)
    if source.startswith(HF_PREFIX):
        from nashcli.model.hf import load_hf_gpt2

        model_config, state_dict = load_hf_gpt2(source[len(HF_PREFIX) :])
        return Weights(source, NashConfig(model=model_config), state_dict=state_dict)
    checkpoint_dir = find_checkpoint(source, which, runs_dir)
    return Weights(source, checkpoint_config(checkpoint_dir), checkpoint_dir=checkpoint_dir)


def find_resume(run: "str | Path", runs_dir: Path = Path("runs")) -> ResumePoint:
    """The run `--resume` continues (a folder, or a name under `runs_dir`) from its `last` checkpoint,
    with the config that checkpoint was saved with (checksummed, unlike the editable config.yaml)."""
    layout = RunLayout.find(run, runs_dir)
    checkpoint_dir = find_checkpoint(layout.root, "last")
    step = read_checkpoint_meta(checkpoint_dir)["step"]
    return ResumePoint(layout, checkpoint_dir, checkpoint_config(checkpoint_dir), step)
