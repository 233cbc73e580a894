"""Reading a checkpoint back, checked before anything is used: a checkpoint may be damaged or hostile.

checkpoint.json is read bounded and validated, and (from format 2) its own sha256 and the size and
sha256 of model.safetensors and state.pt are verified before either file is loaded. Every tensor of
model.safetensors is checked against the model it goes into (key, dtype, shape); state.pt is loaded
with torch.load(weights_only=True), so it cannot run code, and the objects that take its parts
check their values. Format 1 (nash before checksums) still loads.
"""

import json
import pickle
import warnings
from pathlib import Path
from typing import Annotated, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from nashcli import __version__
from nashcli.checksums import verify_sha256
from nashcli.config import ModelConfig, NashConfig
from nashcli.config.overrides import describe_validation_error
from nashcli.engine.checkpoint import (
    CHECKSUMMED_FILES,
    CONTENT_SHA256_KEY,
    FORMAT_VERSION,
    META_FILE,
    MODEL_FILE,
    STATE_FILE,
    content_sha256,
)
from nashcli.errors import NashError
from nashcli.model.gpt import count_parameters
from nashcli.tensor_files import TensorSpec, read_safetensors

MAX_META_BYTES = 1 << 20  # a checkpoint.json holds a few kB; a bigger one is not nash's
DAMAGED_FIX = "use another checkpoint of the run (best, last or step_NNNNNN) or restore this one from a copy"

# The parts of state.pt and their types; the values inside each part are checked by the object that
# loads it (optimizer, grad scaler, progress, data order, RNG), against itself.
TRAINING_STATE_PARTS = {"progress": dict, "world_size": int, "optimizer": dict, "grad_scaler": dict, "ranks": list}


class FileRecord(BaseModel):
    """A checkpoint file as it was written; checked before the file is loaded."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size_bytes: Annotated[int, Field(ge=0)]


class CheckpointMeta(BaseModel):
    """checkpoint.json: what nash writes there, typed. Unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    format: Annotated[int, Field(ge=1)]
    step: Annotated[int, Field(ge=0)]
    config: dict  # validated as a NashConfig by checkpoint_config, where it is used
    files: Optional[dict[str, FileRecord]] = None  # from format 2
    tokens: Annotated[Optional[int], Field(ge=0)] = None
    last_train_loss: Optional[float] = None
    last_val_loss: Optional[float] = None
    best_val_loss: Optional[float] = None
    world_size: Annotated[Optional[int], Field(ge=1)] = None
    precision: Optional[str] = None
    nash_version: Optional[str] = None
    saved_at: Optional[str] = None

    @model_validator(mode="after")
    def _records_every_file_from_format_2(self) -> "CheckpointMeta":
        if self.format >= 2 and (self.files is None or set(self.files) != set(CHECKSUMMED_FILES)):
            raise ValueError(f"format {self.format} records files {' and '.join(CHECKSUMMED_FILES)}")
        return self



def load_model_weights(model: nn.Module, checkpoint_dir: Path) -> None:
    """Load model.safetensors into `model`, re-tying shared tensors. The file's checksum, and every
    key, dtype and shape in it (aliases included), are checked against `model` before any tensor
    is loaded."""
    expected = {key: TensorSpec.of(tensor) for key, tensor in model.state_dict().items()}
    model.load_state_dict(read_model_weights(checkpoint_dir, expected))


def read_model_weights(checkpoint_dir: Path, expected: dict[str, TensorSpec]) -> dict[str, torch.Tensor]:
    """model.safetensors as {key: CPU tensor}, an alias as the very tensor of its key, once the file's
    checksum and every key, dtype and shape (aliases included) are checked against `expected` (the
    model's state_dict specs; a sharded model's give the full shapes)."""
    path = checkpoint_dir / MODEL_FILE
    _verify_recorded_file(checkpoint_dir, MODEL_FILE)
    with read_safetensors(path, DAMAGED_FIX) as stored:
        aliases = _checked_aliases(stored.metadata, stored.specs, path)
        found = {**stored.specs, **{alias: stored.specs[key] for alias, key in aliases.items()}}
        _check_fits_model(found, expected, path)
        tensors = {key: stored.load(key) for key in stored.specs}
    for alias, key in aliases.items():
        tensors[alias] = tensors[key]
    return tensors


def load_training_state(checkpoint_dir: Path) -> dict:
    """state.pt as plain data with the parts of TRAINING_STATE_PARTS, its checksum verified. A file
    that would unpickle arbitrary objects is refused: a checkpoint from a stranger must not run code
    on this machine."""
    path = checkpoint_dir / STATE_FILE
    _verify_recorded_file(checkpoint_dir, STATE_FILE)
    try:
        with warnings.catch_warnings():  # a damaged file makes torch warn first; the error below is the one line
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise NashError(
            f"refusing to load {path}: it contains pickled Python objects beyond tensors and plain data, "
            "which could run code; nash only loads its own checkpoints"
        ) from None
    except OSError as error:
        raise NashError(f"{path} could not be read ({error.strerror or error}): {DAMAGED_FIX}") from None
    except Exception as error:  # a damaged zip or pickle fails in the reader in many ways; all mean damage
        raise NashError(f"{path} is damaged ({type(error).__name__} while reading it): {DAMAGED_FIX}") from None
    problem = _training_state_problem(state)
    if problem is not None:
        raise NashError(f"{path} is not a nash training state ({problem}): {DAMAGED_FIX}")
    return state


def read_checkpoint_meta(checkpoint_dir: Path) -> dict:
    """checkpoint.json as a dict, checked against CheckpointMeta (one-line NashError otherwise)."""
    return _checked_meta(checkpoint_dir).model_dump()


def checkpoint_config(checkpoint_dir: Path) -> NashConfig:
    """The config the checkpoint was trained with (stored in its checkpoint.json). Its model must
    fit in model.safetensors, so that building the model it describes allocates no more than that."""
    try:
        config = NashConfig.model_validate(_checked_meta(checkpoint_dir).config)
    except ValidationError as error:
        raise NashError(
            f"{checkpoint_dir / META_FILE} holds an invalid config ({describe_validation_error(error)}): "
            f"was it written by another nash version? {DAMAGED_FIX}"
        ) from None
    _check_weights_file_holds(config.model, checkpoint_dir)
    return config


def _checked_meta(checkpoint_dir: Path) -> CheckpointMeta:
    """checkpoint.json, checked in this order: a format this nash reads, its own sha256 (from
    format 2), then its shape."""
    path = checkpoint_dir / META_FILE
    raw = _read_meta_json(path)
    version = raw.get("format")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise NashError(
            f"{path} is checkpoint format {version}, from a newer nash; nash {__version__} reads formats up to "
            f"{FORMAT_VERSION}: upgrade nash (pip install -U nash)"
        )
    recorded_sha256 = raw.pop(CONTENT_SHA256_KEY, None)
    if version != 1 and recorded_sha256 != content_sha256(raw):
        raise NashError(f"{path} is damaged or was edited (its content does not match its sha256): {DAMAGED_FIX}")
    try:
        return CheckpointMeta.model_validate(raw)
    except ValidationError as error:
        raise NashError(f"{path} is not a nash checkpoint.json ({_first_problem(error)}): {DAMAGED_FIX}") from None


def _read_meta_json(path: Path) -> dict:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_META_BYTES + 1)  # bounded: the file may be anything
    except OSError as error:
        problem = error.strerror or error
        raise NashError(f"{path} could not be read ({problem}): is {path.parent} a nash checkpoint?") from None
    if len(data) > MAX_META_BYTES:
        raise NashError(f"{path} is over {MAX_META_BYTES:,} bytes, more than a checkpoint.json holds: {DAMAGED_FIX}")
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as error:  # bad JSON or UTF-8, or nested too deep to parse
        raise NashError(f"{path} is not valid JSON ({error}): {DAMAGED_FIX}") from None
    if not isinstance(raw, dict):
        raise NashError(f"{path} holds a JSON {type(raw).__name__}, not an object: {DAMAGED_FIX}")
    return raw


def _check_weights_file_holds(model_config: ModelConfig, checkpoint_dir: Path) -> None:
    _recorded_size_checked(checkpoint_dir, MODEL_FILE)  # the more precise error for a truncated file
    size_bytes, parameters = _size_bytes(checkpoint_dir / MODEL_FILE), count_parameters(model_config)
    if size_bytes < 4 * parameters:  # every weight is stored in fp32
        raise NashError(
            f"{checkpoint_dir / MODEL_FILE} holds {size_bytes:,} bytes, too few for the {parameters:,}-parameter "
            f"model described in {checkpoint_dir / META_FILE}: {DAMAGED_FIX}"
        )


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def _verify_recorded_file(checkpoint_dir: Path, name: str) -> None:
    """Refuse a file whose size or sha256 differs from the record in checkpoint.json (format 1
    checkpoints have no record)."""
    record = _recorded_size_checked(checkpoint_dir, name)
    if record is not None:
        verify_sha256(checkpoint_dir / name, record.sha256, DAMAGED_FIX)


def _recorded_size_checked(checkpoint_dir: Path, name: str) -> Optional[FileRecord]:
    """The file's record in checkpoint.json (None in format 1), once its size matches the record:
    a truncated file needs no hashing to be refused."""
    files = _checked_meta(checkpoint_dir).files
    if files is None:
        return None
    size_bytes, record = _size_bytes(checkpoint_dir / name), files[name]
    if size_bytes != record.size_bytes:
        raise NashError(
            f"{checkpoint_dir / name} is damaged ({size_bytes:,} bytes where {META_FILE} records "
            f"{record.size_bytes:,}): {DAMAGED_FIX}"
        )
    return record


def _size_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as error:
        raise NashError(f"{path} could not be read ({error.strerror or error}): {DAMAGED_FIX}") from None


def _checked_aliases(metadata: dict, stored: dict, path: Path) -> dict[str, str]:
    """{alias key: stored key} from the metadata; each must point at a stored tensor."""
    try:
        aliases = json.loads(metadata.get("aliases", "{}"))
    except (ValueError, RecursionError):
        aliases = None
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise NashError(f"{path}: its 'aliases' metadata is not a JSON object of tensor names: {DAMAGED_FIX}")
    for alias, key in aliases.items():
        if alias in stored or key not in stored:
            raise NashError(
                f"{path}: the alias {alias} -> {key} must name an unstored tensor and a stored one: {DAMAGED_FIX}"
            )
    return aliases


def _check_fits_model(found: dict[str, TensorSpec], expected: dict[str, TensorSpec], path: Path) -> None:
    missing, unexpected = _key_differences(expected, found)
    if missing or unexpected:
        raise NashError(
            f"{path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}): "
            "was it written by another nash version or for another model shape?"
        )
    for key, spec in expected.items():
        if found[key] != spec:
            raise NashError(
                f"{path} does not fit this model ({key} is {found[key]} where the model has {spec}): "
                "was it written for another model shape, or damaged?"
            )


def _training_state_problem(state: object) -> Optional[str]:
    """What is wrong with the layout of a loaded state.pt, or None."""
    if not isinstance(state, dict):
        return f"{type(state).__name__}, not dict"
    for part, kind in TRAINING_STATE_PARTS.items():
        if part not in state:
            return f"no {part!r}"
        if not isinstance(state[part], kind) or isinstance(state[part], bool):
            return f"{part!r} is {type(state[part]).__name__}, not {kind.__name__}"
    if state["world_size"] < 1 or len(state["ranks"]) != state["world_size"]:
        return f"{len(state['ranks'])} rank states for world_size {state['world_size']}"
    for rank, own in enumerate(state["ranks"]):
        if not (isinstance(own, dict) and isinstance(own.get("rng"), dict) and isinstance(own.get("data"), dict)):
            return f"ranks[{rank}] lacks its 'rng' and 'data' dicts"
    return None


def _key_differences(expected, found) -> tuple[list, list]:
    expected, found = set(expected), set(found)
    return sorted(expected - found), sorted(found - expected)
