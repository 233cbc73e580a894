"""Claiming the folder a training run writes to: a new run, a resumed one, or one that replaces an
old run (--overwrite).

In two steps, so that nothing on disk changes before everything is validated:
  open_run     finds the folder and its starting point and takes the folder's lock; changes nothing
  claim_folder (after the trainer has checked config, data and weights) creates the folder, or
               swaps a fresh one in for the old run, which is deleted only then
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from nashcli.config import ModelConfig, NashConfig
from nashcli.engine.distributed import DistributedContext, barrier, broadcast_object
from nashcli.engine.locate import ResumePoint, Weights, find_resume, find_weights
from nashcli.errors import NashError
from nashcli.folders import FolderLock, check_owned, swap_in
from nashcli.runs.layout import RunLayout, default_run_name
from nashcli.runs.metrics import check_sinks


@dataclass
class OpenedRun:
    config: NashConfig  # as the run will train it (name set; model shape from init_from weights)
    layout: RunLayout
    resume_dir: Optional[Path] = None  # the checkpoint to resume from
    weights: Optional[Weights] = None  # the weights to start from
    notes: list[str] = field(default_factory=list)  # one-line remarks for the display
    replaces_old_run: bool = False  # --overwrite of an existing run folder
    lock: Optional[FolderLock] = None  # held by rank 0 from open_run until close

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()


def open_run(
    config: NashConfig,
    context: DistributedContext,
    resume: "ResumePoint | Path | None",
    overwrite: bool,
    name_prefix: Optional[str] = None,
) -> OpenedRun:
    """The run folder and starting point of `config`, locked against other writers; nothing is written.

    resume: continue that run (a ResumePoint, or a folder or name) from its `last` checkpoint.
    Otherwise a new folder runs_dir/<name>; an existing one is an error unless `overwrite`.
    """
    if resume is not None:
        point = resume if isinstance(resume, ResumePoint) else find_resume(resume, config.runs_dir)
        _check_same_model(config.model, point)
        if point.step >= config.train.max_steps:
            raise NashError(
                f"run {point.layout.root} already has {point.step} steps (train.max_steps={config.train.max_steps}): "
                "to train longer, resume with --set train.max_steps=N"
            )
        config = config.model_copy(update={"name": point.layout.name, "runs_dir": point.layout.root.parent})
        notes = [f"resuming at step {point.step} from {point.checkpoint_dir}"]
        opened = OpenedRun(config, point.layout, resume_dir=point.checkpoint_dir, notes=notes)
        opened.lock = _lock(point.layout, context)
        return opened
    # The default name holds a timestamp: rank 0 picks it so that every process agrees.
    name = config.name or broadcast_object(default_run_name(name_prefix, config.runs_dir), context)
    config = config.model_copy(update={"name": name})
    layout = RunLayout.for_config(config)
    opened = OpenedRun(config, layout, lock=_lock(layout, context))
    try:
        opened.replaces_old_run = _check_replaceable(layout.root, overwrite)
        if context.is_main:
            check_sinks(config)
        if config.init_from is not None:
            opened.weights = find_weights(config.init_from, runs_dir=config.runs_dir)
            opened.config, opened.notes = with_weights_shape(config, opened.weights)
    except BaseException:
        opened.close()
        raise
    return opened


def claim_folder(opened: OpenedRun, context: DistributedContext) -> None:
    """Make the run folder hold this run's config.yaml: create it, or (--overwrite) build a fresh
    one beside the old run and swap it in. Call once every process has read what it needs from
    the old folder (its weights for --init-from): the old run is deleted here."""
    barrier(context)
    if context.is_main:
        layout = opened.layout
        if opened.replaces_old_run:
            _check_replaceable(layout.root, overwrite=True)  # again: files may have appeared since open_run
            built = layout.root.parent / f".{layout.name}.new-{os.getpid()}"
            shutil.rmtree(built, ignore_errors=True)
            RunLayout(built).write_config(opened.config)
            swap_in(built, layout.root)
        else:
            layout.write_config(opened.config)
    barrier(context)


def with_weights_shape(config: NashConfig, weights: Weights) -> tuple[NashConfig, list[str]]:
    """`config` with its model section replaced by the shape of the weights, and notes saying so.

    Dropout is not part of the shape: an explicitly set model.dropout is kept, otherwise the value
    the weights were trained with.
    """
    model = weights.config.model
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


def _lock(layout: RunLayout, context: DistributedContext) -> Optional[FolderLock]:
    """Rank 0 writes the run folder, so rank 0 alone holds its lock."""
    if not context.is_main:
        return None
    lock = FolderLock(layout.root, "run")
    lock.acquire()
    return lock


def _check_replaceable(folder: Path, overwrite: bool) -> bool:
    """Whether `folder` holds an old run that --overwrite replaces; NashError if it may not."""
    if not folder.is_symlink() and (not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))):
        return False
    if not overwrite:
        raise NashError(
            f"run folder {folder} already exists: resume it with `nash train --resume {folder}`, "
            "choose another name with --run, or replace it with --overwrite"
        )
    check_owned(folder, RunLayout.is_run_entry, "run folder", "move them out or choose another name with --run")
    return True


def _check_same_model(model: ModelConfig, point: ResumePoint) -> None:
    """A resumed run keeps its model: its weights and optimizer state have that shape."""
    saved = point.config.model
    changed = [key for key in ModelConfig.model_fields if key != "dropout" and getattr(model, key) != getattr(saved, key)]
    if changed:
        key = changed[0]
        raise NashError(
            f"--resume keeps the run's model: model.{key} is {getattr(saved, key)} in {point.checkpoint_dir}, "
            f"not {getattr(model, key)}; to train another shape from these weights, start a new run with "
            f"--init-from {point.layout.root}"
        )
