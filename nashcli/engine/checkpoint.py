"""Checkpoints: a folder per checkpoint, written atomically, loaded without running any code.

    checkpoints/<name>/
      model.safetensors   the model's weights (a tied tensor stored once, re-tied on load)
      state.pt            training state: optimizer, grad scaler, step, tokens, RNG and data states;
                          only tensors and plain data, loaded with torch.load(weights_only=True)
      checkpoint.json     step, losses, and the full config: the folder is self-contained

Atomic: a checkpoint is written into `.tmp-<name>`, fsynced, and swapped in with two renames
(`<name>` -> `.old-<name>`, `.tmp-<name>` -> `<name>`). A process killed at any moment leaves
either the new or the previous checkpoint; readers fall back to `.old-<name>` for the one moment
between the two renames.
"""

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nashcli.config import NashConfig, TrainConfig
from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "checkpoint.json"
FORMAT_VERSION = 1


def save_checkpoint(
    checkpoints_dir: Path, names: Sequence[str], model: nn.Module, training_state: dict, meta: dict
) -> Path:
    """Write one checkpoint under every name in `names` (the first is written, the others are hard
    links to its files, so `last` and `best` at the same step cost one write). Returns the first."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    first = checkpoints_dir / names[0]
    temporary = checkpoints_dir / f".tmp-{names[0]}"
    _remove(temporary)
    temporary.mkdir()
    tensors, aliases = unique_tensors(model.state_dict())
    save_file(tensors, temporary / MODEL_FILE, metadata={"format": "nash", "aliases": json.dumps(aliases)})
    torch.save(training_state, temporary / STATE_FILE)
    (temporary / META_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2), encoding="utf-8")
    _fsync_folder_files(temporary)
    _swap_into_place(temporary, first)
    for name in names[1:]:
        linked = checkpoints_dir / f".tmp-{name}"
        _remove(linked)
        linked.mkdir()
        for source in first.iterdir():
            _link_or_copy(source, linked / source.name)
        _fsync_folder_files(linked)
        _swap_into_place(linked, checkpoints_dir / name)
    return first


def checkpoint_names(step: int, train: TrainConfig, *, final: bool, stopping: bool, is_best: bool) -> list[str]:
    """The checkpoints to write after `step`: `last` on the interval, at the end and when stopping;
    `best` on a new best val loss; step_NNNNNN on the interval when keeping step checkpoints."""
    on_interval = train.checkpoint_interval > 0 and step % train.checkpoint_interval == 0
    names = ["last"] if (on_interval or final or stopping) else []
    names += ["best"] if is_best else []
    if on_interval and train.keep_checkpoints > 0:
        names.append(RunLayout.step_checkpoint_name(step))
    return names


def unique_tensors(state_dict: dict) -> tuple[dict, dict]:
    """(tensors stored once, {alias key: stored key}): safetensors refuses tensors sharing memory,
    as the tied token embedding and LM head do."""
    tensors, aliases, stored_by_pointer = {}, {}, {}
    for key, tensor in state_dict.items():
        pointer = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if pointer in stored_by_pointer:
            aliases[key] = stored_by_pointer[pointer]
            continue
        stored_by_pointer[pointer] = key
        tensors[key] = tensor.detach().to("cpu").contiguous()
    return tensors, aliases


def load_model_weights(model: nn.Module, checkpoint_dir: Path) -> None:
    """Load model.safetensors into `model` (all keys must match), re-tying shared tensors."""
    path = checkpoint_dir / MODEL_FILE
    try:
        with open(path, "rb") as file:
            header_length = int.from_bytes(file.read(8), "little")
            header = json.loads(file.read(header_length))
        tensors = load_file(path)
    except (SafetensorError, ValueError, OSError) as error:
        raise NashError(f"{path} is not a readable safetensors file ({error}); the checkpoint is damaged") from None
    aliases = json.loads(header.get("__metadata__", {}).get("aliases", "{}"))
    for alias, stored in aliases.items():
        tensors[alias] = tensors[stored]
    missing, unexpected = _key_differences(model.state_dict().keys(), tensors.keys())
    if missing or unexpected:
        raise NashError(
            f"{path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}): "
            "was it written by another nash version or for another model shape?"
        )
    model.load_state_dict(tensors)


def load_training_state(checkpoint_dir: Path) -> dict:
    """state.pt as plain data. A file that would unpickle arbitrary objects is refused: a checkpoint
    from a stranger must not run code on this machine."""
    path = checkpoint_dir / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise NashError(
            f"refusing to load {path}: it contains pickled Python objects beyond tensors and plain data, "
            "which could run code; nash only loads its own checkpoints"
        ) from None
    except (OSError, RuntimeError, EOFError) as error:
        raise NashError(f"{path} could not be read ({error}); the checkpoint is damaged") from None


def read_checkpoint_meta(checkpoint_dir: Path) -> dict:
    path = checkpoint_dir / META_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise NashError(f"{path} could not be read ({error}); is {checkpoint_dir} a nash checkpoint?") from None


def checkpoint_config(checkpoint_dir: Path) -> NashConfig:
    """The config the checkpoint was trained with (stored in its checkpoint.json)."""
    return NashConfig.model_validate(read_checkpoint_meta(checkpoint_dir)["config"])


def resolve_checkpoint_dir(path_or_run: "str | Path", which: str = "last", runs_dir: Path = Path("runs")) -> Path:
    """A checkpoint folder from: a checkpoint folder, a run folder, or a run name under `runs_dir`
    (then checkpoints/<which>, e.g. "last" or "best")."""
    path = Path(path_or_run)
    if (path / MODEL_FILE).is_file():
        return path
    if path.is_file():
        raise NashError(
            f"{path} is a file: give a nash run folder or checkpoint folder (with {MODEL_FILE} and {STATE_FILE})"
        )
    layout = RunLayout(path) if (path / "checkpoints").is_dir() else RunLayout.find(path_or_run, runs_dir)
    found = existing_checkpoint(layout.checkpoint_dir(which))
    if found is None:
        available = sorted(p.name for p in layout.checkpoints_dir.glob("*") if not p.name.startswith("."))
        raise NashError(
            f"run {layout.root} has no {which!r} checkpoint; "
            + (f"it has: {', '.join(available)}" if available else "it has not saved one yet")
        )
    return found


def existing_checkpoint(checkpoint_dir: Path) -> Optional[Path]:
    """`checkpoint_dir`, or its previous version if a save was interrupted between its two renames."""
    if (checkpoint_dir / MODEL_FILE).is_file():
        return checkpoint_dir
    previous = checkpoint_dir.with_name(f".old-{checkpoint_dir.name}")
    if not checkpoint_dir.exists() and (previous / MODEL_FILE).is_file():
        return previous
    return None


def load_checkpoint_model(path_or_run: "str | Path", which: str = "last", device: "str | torch.device" = "cpu"):
    """(GPT in eval mode, NashConfig) from a run folder, run name or checkpoint folder.

    Example: model, config = load_checkpoint_model("runs/tiny-demo", which="best")
    """
    from nashcli.model.gpt import GPT

    checkpoint_dir = resolve_checkpoint_dir(path_or_run, which)
    config = checkpoint_config(checkpoint_dir)
    model = GPT(config.model)
    load_model_weights(model, checkpoint_dir)
    return model.to(device).eval(), config


def prune_step_checkpoints(layout: RunLayout, keep: int) -> None:
    """Delete all but the newest `keep` step_NNNNNN checkpoints."""
    step_dirs = layout.step_checkpoint_dirs()
    for old in step_dirs[: max(0, len(step_dirs) - keep)]:
        _remove(old)


def _swap_into_place(temporary: Path, target: Path) -> None:
    previous = target.with_name(f".old-{target.name}")
    if not target.exists() and previous.exists():
        os.replace(previous, target)  # a save died between its renames: its previous state is the valid one
    _remove(previous)
    if target.exists():
        os.replace(target, previous)
    os.replace(temporary, target)
    _fsync_path(target.parent)
    _remove(previous)


def _fsync_folder_files(folder: Path) -> None:
    for path in folder.iterdir():
        _fsync_path(path)
    _fsync_path(folder)


def _fsync_path(path: Path) -> None:
    # Folders need an fsync too, or the renames themselves may not survive a power cut.
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        descriptor = os.open(path, flags)
    except OSError:
        return  # folders cannot be opened on Windows; nothing to sync there
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)


def _key_differences(expected, found) -> tuple[list, list]:
    expected, found = set(expected), set(found)
    return sorted(expected - found), sorted(found - expected)
