"""Choosing the folder a training run writes to: a new run, a resumed one, or one that starts from
other weights (`init_from`)."""

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from nashcli.config import NashConfig
from nashcli.engine.checkpoint import read_checkpoint_meta, resolve_checkpoint_dir
from nashcli.engine.distributed import DistributedContext, barrier, broadcast_object
from nashcli.engine.init_from import InitialWeights, resolve_initial_weights, with_weights_shape
from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout, default_run_name


@dataclass
class OpenedRun:
    config: NashConfig  # as the run will train it (name set; model shape from init_from weights)
    layout: RunLayout
    resume_dir: Optional[Path] = None  # the checkpoint to resume from
    weights: Optional[InitialWeights] = None  # the weights to start from
    notes: list[str] = field(default_factory=list)  # one-line remarks for the display


def open_run(
    config: NashConfig,
    context: DistributedContext,
    resume: Optional[Path],
    overwrite: bool,
    name_prefix: Optional[str] = None,
) -> OpenedRun:
    """The run folder and starting point of `config`.

    resume: continue the run in that folder (or of that name) from its `last` checkpoint.
    Otherwise a new folder runs_dir/<name>; an existing one is an error unless `overwrite`.
    """
    if resume is not None:
        layout = RunLayout.find(resume, config.runs_dir)
        resume_dir = resolve_checkpoint_dir(layout.root, "last")
        step = read_checkpoint_meta(resume_dir).get("step")
        config = config.model_copy(update={"name": layout.name, "runs_dir": layout.root.parent})
        return OpenedRun(config, layout, resume_dir=resume_dir, notes=[f"resuming at step {step} from {resume_dir}"])
    # The default name holds a timestamp: rank 0 picks it so that every process agrees.
    name = config.name or broadcast_object(default_run_name(name_prefix, config.runs_dir), context)
    config = config.model_copy(update={"name": name})
    layout = RunLayout.for_config(config)
    if layout.root.exists() and any(layout.root.iterdir()):
        if not overwrite:
            raise NashError(
                f"run folder {layout.root} already exists: resume it with `nash train --resume {layout.root}`, "
                "choose another name with --run, or replace it with --overwrite"
            )
        barrier(context)  # every process has seen the old folder before rank 0 deletes it
        if context.is_main:
            shutil.rmtree(layout.root)
        barrier(context)
    if config.init_from is None:
        return OpenedRun(config, layout)
    weights = resolve_initial_weights(config.init_from, config.runs_dir)
    config, notes = with_weights_shape(config, weights)
    return OpenedRun(config, layout, weights=weights, notes=notes)
