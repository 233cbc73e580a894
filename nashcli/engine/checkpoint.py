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

Checked: checkpoint.json records the size and sha256 of the two other files and the sha256 of its
own content, so that checkpoint_reading.py can refuse a damaged or hostile checkpoint before using
any of it. A state holding NaN or infinity is never written.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from nashcli.checksums import sha256_file
from nashcli.config import TrainConfig
from nashcli.errors import NashError
from nashcli.folders import fsync_folder, swap_in
from nashcli.runs.layout import RunLayout
from nashcli.tensor_files import save_safetensors

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "checkpoint.json"
FORMAT_VERSION = 2  # 2: checkpoint.json records the size and sha256 of CHECKSUMMED_FILES and of itself
CHECKSUMMED_FILES = (MODEL_FILE, STATE_FILE)
CONTENT_SHA256_KEY = "content_sha256"  # checkpoint.json's own checksum, over the rest of its content


def save_checkpoint(
    checkpoints_dir: Path,
    names: Sequence[str],
    weights: "nn.Module | dict[str, torch.Tensor]",
    training_state: dict,
    meta: dict,
) -> Path:
    """Write one checkpoint under every name in `names` (the first is written, the others are hard
    links to its files, so `last` and `best` at the same step cost one write). Returns the first.

    `weights` is the model, or its full state dict (an FSDP model's, gathered to rank 0).
    `training_state` has the parts of checkpoint_reading.TRAINING_STATE_PARTS. A model or state holding NaN or
    infinite values is refused before anything is written: `last` must stay a state training can
    continue from. A failed write (disk full) removes its partial folder and raises its OSError.
    """
    model_state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    _refuse_non_finite(names, model_state, training_state)
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    first = checkpoints_dir / names[0]
    _write_beside_and_swap(first, lambda folder: _write_checkpoint_files(folder, model_state, training_state, meta))
    for name in names[1:]:
        _write_beside_and_swap(checkpoints_dir / name, lambda folder: _link_files(first, folder))
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


def content_sha256(meta: dict) -> str:
    """The sha256 of checkpoint.json's content (less this checksum), as canonical JSON: a damaged
    config or step must not load as if it were the one saved."""
    canonical = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _refuse_non_finite(names: Sequence[str], model_state: dict, training_state: dict) -> None:
    where = _first_non_finite(model_state, "model") or _first_non_finite(training_state, "state")
    if where is not None:
        raise NashError(
            f"not saving checkpoint {', '.join(names)}: {where} holds NaN or infinite values, so the previous "
            "checkpoint is kept: lower train.lr or use train.precision=bf16/fp32"
        )


def _first_non_finite(value: object, where: str) -> Optional[str]:
    """The path (like state['optimizer']['state'][3]['exp_avg']) of the first floating-point tensor
    in `value` holding NaN or infinity, or None."""
    if isinstance(value, torch.Tensor):
        return where if value.is_floating_point() and not bool(torch.isfinite(value).all()) else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _first_non_finite(item, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


def _write_beside_and_swap(target: Path, write: Callable[[Path], None]) -> None:
    """`write` into `.tmp-<name>` beside `target`, then swap it in. If anything fails, the
    temporary folder (nash's own) is removed and the error raised; `target` is untouched."""
    temporary = target.with_name(f".tmp-{target.name}")
    _remove(temporary)
    try:
        temporary.mkdir()
        write(temporary)
        fsync_folder(temporary)
        # A fixed aside name: readers fall back to it if a save dies between its two renames.
        swap_in(temporary, target, aside=target.with_name(f".old-{target.name}"))
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)  # the error being raised says what went wrong
        raise


def _write_checkpoint_files(folder: Path, model_state: dict, training_state: dict, meta: dict) -> None:
    tensors, aliases = unique_tensors(model_state)
    save_safetensors(tensors, folder / MODEL_FILE, metadata={"format": "nash", "aliases": json.dumps(aliases)})
    _torch_save(training_state, folder / STATE_FILE)
    files = {
        name: {"sha256": sha256_file(folder / name), "size_bytes": (folder / name).stat().st_size}
        for name in CHECKSUMMED_FILES
    }
    meta = {"format": FORMAT_VERSION, **meta, "files": files}
    meta[CONTENT_SHA256_KEY] = content_sha256(meta)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _torch_save(obj: object, path: Path) -> None:
    """torch.save, raising the OSError of a failed write (disk full, read-only): torch reports it
    as a RuntimeError without the errno, so it is caught on its way through the file object."""
    with open(path, "wb") as file:
        recording = _OSErrorRecordingFile(file)
        try:
            torch.save(obj, recording)
        except RuntimeError:
            if recording.error is not None:
                raise recording.error from None
            raise


class _OSErrorRecordingFile:
    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def _link_files(source_folder: Path, folder: Path) -> None:
    for source in source_folder.iterdir():
        _link_or_copy(source, folder / source.name)


def existing_checkpoint(checkpoint_dir: Path) -> Optional[Path]:
    """`checkpoint_dir`, or its previous version if a save was interrupted between its two renames."""
    if (checkpoint_dir / MODEL_FILE).is_file():
        return checkpoint_dir
    previous = checkpoint_dir.with_name(f".old-{checkpoint_dir.name}")
    if not checkpoint_dir.exists() and (previous / MODEL_FILE).is_file():
        return previous
    return None


def prune_step_checkpoints(layout: RunLayout, keep: int) -> None:
    """Delete all but the newest `keep` step_NNNNNN checkpoints."""
    step_dirs = layout.step_checkpoint_dirs()
    for old in step_dirs[: max(0, len(step_dirs) - keep)]:
        _remove(old)


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
