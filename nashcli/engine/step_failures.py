"""The error a training step that went wrong ends the run with: a message that names the likely cause."""

from pathlib import Path
from typing import Optional

from nashcli.errors import NashError

# A non-finite loss this soon after a resume points at the checkpoint rather than the learning rate.
STEPS_SUSPECTING_THE_CHECKPOINT = 20


def non_finite_loss_error(
    loss: float, step: int, steps_since_resume: int, resume_dir: Optional[Path], checkpoints_dir: Path
) -> NashError:
    """The run stops without saving: `last` keeps the state before `step` (1-based, the failed one)."""
    if resume_dir is not None and steps_since_resume <= STEPS_SUSPECTING_THE_CHECKPOINT:
        return NashError(
            f"the training loss became {loss} at step {step}, just after resuming from {resume_dir} "
            f"at step {step - steps_since_resume}: that checkpoint may be damaged; check it with `nash eval`, "
            "start again from an earlier checkpoint with --init-from, or lower train.lr"
        )
    return NashError(
        f"the training loss became {loss} at step {step}; the run stopped, its last good "
        f"checkpoint is in {checkpoints_dir}: lower train.lr or use train.precision=bf16/fp32"
    )
