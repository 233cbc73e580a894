"""Damaged and hostile checkpoint files. Every file is checked against the size and sha256 recorded
when it was written, and every tensor against what it is loaded into, before anything is used: a
bad checkpoint is one `error:` line at `nash eval` and `nash train --resume`, the run folder stays
byte-identical, and a file with random bytes flipped either loads exactly or is refused."""

import io
import json
import math
import os
import shutil
import stat
import struct
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from nashcli.cli.app import app
from nashcli.config.models import ModelConfig
from nashcli.data.pretrain import PretrainBatches
from nashcli.engine.checkpoint_reading import checkpoint_config, load_model_weights, load_training_state, read_checkpoint_meta
from nashcli.engine.optim import build_optimizer
from nashcli.engine.precision import load_grad_scaler_state
from nashcli.engine.counters import RunCounters
from nashcli.engine.rng import restore_rng_state
from nashcli.engine.trainer import train
from nashcli.errors import NashError
from nashcli.model.gpt import GPT
from nashcli.model.hf import export_hf, load_hf_gpt2

from .checks import flip_random_bytes, one_error_line, snapshot

runner = CliRunner()
LAST = Path("runs/run/checkpoints/last")
RESUME = ["train", "--resume", "runs/run", "--quiet", "--set", "train.max_steps=4"]


@pytest.fixture(scope="module")
def trained_template(tiny_config, tmp_path_factory) -> Path:
    runs_dir = tmp_path_factory.mktemp("checkpoint-files")
    steps = ["train.max_steps=2", "train.eval_interval=2", "train.checkpoint_interval=2"]
    narrow = ["model.d_model=8", "model.d_ff=16"]  # small files: the fuzz test rewrites them many times
    train(tiny_config("name=run", f"runs_dir={runs_dir}", *steps, *narrow))
    return runs_dir / "run"


@pytest.fixture
def run(trained_template) -> Path:
    """runs/run: a copy of a 2-step run with `last` and `best` (copied, so they share no hard links)."""
    return Path(shutil.copytree(trained_template, Path("runs/run")))


def edit_state(checkpoint_dir: Path, change) -> None:
    state = torch.load(checkpoint_dir / "state.pt", weights_only=True)
    change(state)
    torch.save(state, checkpoint_dir / "state.pt")


def optimizer_state(state: dict) -> dict:
    return state["optimizer"]["adamw"]["state"]


def optimizer_groups(state: dict) -> list:
    return state["optimizer"]["adamw"]["param_groups"]


def rng_state(state: dict) -> dict:
    return state["ranks"][0]["rng"]


class ResumeParts:
    """What a resume loads a checkpoint into (built once: building them is most of a load's time)."""

    def __init__(self, checkpoint_dir: Path, dataset: Path):
        config = checkpoint_config(checkpoint_dir)
        self.model = GPT(config.model)
        self.optimizer = build_optimizer(self.model, config.train, torch.device("cpu"))
        self.batches = PretrainBatches(dataset, "train", config.model.max_seq_len, config.train.batch_size, seed=0)

    def load_state(self, state: dict) -> None:
        """What the trainer does with a loaded state.pt, through the same checks."""
        self.optimizer.load_state_dict(state["optimizer"])
        RunCounters().load_state_dict(state["progress"])
        self.batches.load_state_dict(state["ranks"][0]["data"])
        restore_rng_state(state["ranks"][0]["rng"])

    def load(self, checkpoint_dir: Path) -> dict:
        """Everything a resume takes from a checkpoint: its config, weights and state."""
        config = checkpoint_config(checkpoint_dir)
        load_model_weights(self.model, checkpoint_dir)
        state = load_training_state(checkpoint_dir)
        self.load_state(state)
        weights = {key: tensor.clone() for key, tensor in self.model.state_dict().items()}
        return {"meta": read_checkpoint_meta(checkpoint_dir), "config": config, "weights": weights, "state": state}


# state.pt changes, each refused by the part that loads it (optimizer, progress, RNG, data order).
PART_CASES = {
    "exp-avg-shape": (
        lambda s: optimizer_state(s)[0].update(exp_avg=torch.zeros(7)),
        "exp_avg of parameter 0 is a torch.float32 tensor of shape [7] where the parameter is torch.float32",
    ),
    "exp-avg-sq-dtype": (
        lambda s: optimizer_state(s)[1].update(exp_avg_sq=optimizer_state(s)[1]["exp_avg_sq"].double()),
        "exp_avg_sq of parameter 1 is a torch.float64 tensor",
    ),
    "step-nan": (lambda s: optimizer_state(s)[0].update(step=torch.tensor(math.nan)), "step of parameter 0 holds NaN"),
    "step-vector": (lambda s: optimizer_state(s)[0].update(step=torch.zeros(3)), "step of parameter 0 is a torch"),
    "unknown-parameter": (lambda s: optimizer_state(s).update({999: optimizer_state(s)[0]}), "parameter 999, which"),
    "missing-buffer": (lambda s: optimizer_state(s)[2].pop("exp_avg"), "parameter 2 has state ['exp_avg_sq', 'step']"),
    "group-count": (lambda s: optimizer_groups(s).pop(), "1 parameter groups where the optimizer has 2"),
    "group-params": (
        lambda s: optimizer_groups(s)[0]["params"].reverse(), "group 0: it lists other parameters"
    ),
    "group-betas": (lambda s: optimizer_groups(s)[0].update(betas="x"), "betas is a str of another kind"),
    "progress-keys": (lambda s: s["progress"].pop("tokens"), "the run counters are damaged"),
    "progress-step": (lambda s: s["progress"].update(step=-1), "step and tokens must be integers >= 0"),
    "rng-python": (
        lambda s: rng_state(s).update(python_state=rng_state(s)["python_state"][:10]),
        "random number generator state is damaged: python_state is missing or malformed",
    ),
    "rng-torch": (
        lambda s: rng_state(s).update(torch=torch.full_like(rng_state(s)["torch"], 255)), "torch refused it"
    ),
    "rng-missing": (lambda s: rng_state(s).pop("numpy_keys"), "numpy_keys is missing"),
    "data-position": (
        lambda s: s["ranks"][0]["data"]["order"].update(items_consumed=-5), "data position has items_consumed=-5"
    ),
    "data-missing": (lambda s: s["ranks"][0].update(data={}), "the data position must hold the integers"),
}


@pytest.fixture(scope="module")
def resume_parts(trained_template, tiny_dataset) -> ResumeParts:
    return ResumeParts(trained_template / "checkpoints" / "last", tiny_dataset)


@pytest.mark.parametrize("change, message", PART_CASES.values(), ids=PART_CASES.keys())
def test_each_part_refuses_a_hostile_state_before_taking_it(trained_template, resume_parts, change, message):
    state = load_training_state(trained_template / "checkpoints" / "last")
    change(state)
    with pytest.raises(NashError) as error:
        resume_parts.load_state(state)
    assert message in str(error.value) and "\n" not in str(error.value)


# Through the CLI: the trainer names the file, and the run folder is left as it was.
RESUME_CASES = {
    name: PART_CASES[name] for name in ("exp-avg-shape", "progress-keys", "rng-torch", "data-position")
} | {"no-ranks": (lambda s: s.pop("ranks"), "state.pt is not a nash training state (no 'ranks')")}


@pytest.mark.parametrize("change, message", RESUME_CASES.values(), ids=RESUME_CASES.keys())
def test_resume_refuses_a_hostile_state_pt_in_one_line_and_changes_nothing(run, reseal_checkpoint, change, message):
    edit_state(LAST, change)
    reseal_checkpoint(LAST)  # a hostile file carries checksums that match
    before = snapshot(run)
    line = one_error_line(runner.invoke(app, RESUME))
    assert str(LAST / "state.pt") in line and message in line
    assert snapshot(run) == before


def rewrite_weights(checkpoint_dir: Path, change) -> None:
    """model.safetensors with change(tensors, metadata) applied."""
    with safe_open(checkpoint_dir / "model.safetensors", "pt") as stored:
        tensors, metadata = {key: stored.get_tensor(key) for key in stored.keys()}, stored.metadata()
    change(tensors, metadata)
    save_file(tensors, checkpoint_dir / "model.safetensors", metadata=metadata)


def replace_weight(checkpoint_dir: Path, key: str, tensor: torch.Tensor) -> None:
    rewrite_weights(checkpoint_dir, lambda tensors, metadata: tensors.update({key: tensor}))


def huge_header(checkpoint_dir: Path) -> None:
    data = (checkpoint_dir / "model.safetensors").read_bytes()
    (checkpoint_dir / "model.safetensors").write_bytes(struct.pack("<Q", 2**64 - 1) + data[8:])


EVAL_CASES = {
    "weights-dtype": (
        lambda: replace_weight(LAST, "final_norm.weight", torch.ones(8, dtype=torch.float16)),
        "final_norm.weight is F16 [8] where the model has F32 [8]",
    ),
    "weights-shape": (
        lambda: replace_weight(LAST, "final_norm.bias", torch.zeros(7)),
        "final_norm.bias is F32 [7] where the model has F32 [8]",
    ),
    "weights-extra-key": (
        lambda: replace_weight(LAST, "payload", torch.zeros(10)), "unexpected ['payload']"
    ),
    "weights-missing-key": (
        lambda: rewrite_weights(LAST, lambda t, m: t.pop("final_norm.bias")), "missing ['final_norm.bias']"
    ),
    "weights-bad-alias": (
        lambda: rewrite_weights(LAST, lambda t, m: m.update(aliases='{"x": "nosuch"}')), "alias x -> nosuch must name"
    ),
    "weights-huge-header": (lambda: huge_header(LAST), "is not a readable safetensors file"),
}


@pytest.mark.parametrize("damage, message", EVAL_CASES.values(), ids=EVAL_CASES.keys())
def test_eval_refuses_hostile_weights_in_one_line_and_changes_nothing(run, reseal_checkpoint, damage, message):
    damage()
    reseal_checkpoint(LAST)
    before = snapshot(run)
    line = one_error_line(runner.invoke(app, ["eval", "runs/run", "--checkpoint", "last", "--max-batches", "1"]))
    assert str(LAST / "model.safetensors") in line and message in line
    assert snapshot(run) == before


def describe_a_huge_model(path: Path) -> None:
    meta = json.loads(path.read_text())
    meta["config"]["model"].update(n_layers=48, n_heads=32, d_model=4096, d_ff=16384)  # 40 GB in fp32
    path.write_text(json.dumps({**meta, "format": 1}))  # format 1: no content checksum refuses the edit first


META_CASES = {
    "list": (lambda path: path.write_text("[]"), "checkpoint.json holds a JSON list, not an object"),
    "huge-model": (describe_a_huge_model, "too few for the 9,872,158,720-parameter model described in"),
    "no-config": (lambda path: path.write_text('{"format": 1, "step": 2}'), "(config: Field required)"),
    "wrong-types": (lambda path: path.write_text('{"format": 1, "step": [], "config": {}}'), "(step: Input should be"),
    "newer-format": (lambda path: path.write_text('{"format": 9}'), "checkpoint format 9, from a newer nash"),
}


@pytest.mark.parametrize(
    "command, case",
    [("eval", case) for case in META_CASES] + [("resume", "no-config")],
    ids=[f"eval-{case}" for case in META_CASES] + ["resume-no-config"],
)
def test_a_checkpoint_json_of_the_wrong_shape_is_one_line_and_changes_nothing(run, command, case):
    damage, message = META_CASES[case]
    damage(LAST / "checkpoint.json")
    before = snapshot(run)
    args = {
        "eval": ["eval", "runs/run", "--checkpoint", "last", "--max-batches", "1"],
        "resume": RESUME,
    }[command]
    line = one_error_line(runner.invoke(app, args))
    assert str(LAST / "checkpoint.json") in line and message in line
    assert snapshot(run) == before


@pytest.mark.parametrize("name", ["model.safetensors", "state.pt"])
def test_resume_refuses_a_truncated_file_by_its_recorded_size(run, name):
    data = (LAST / name).read_bytes()
    (LAST / name).write_bytes(data[: len(data) // 2])
    before = snapshot(run)
    line = one_error_line(runner.invoke(app, RESUME))
    assert f"{LAST / name} is damaged ({len(data) // 2:,} bytes where checkpoint.json records {len(data):,})" in line
    assert snapshot(run) == before


def test_a_non_finite_loss_right_after_a_resume_blames_the_checkpoint_and_keeps_it(run, reseal_checkpoint):
    replace_weight(LAST, "final_norm.weight", torch.full((8,), 3e38))  # finite, but the logits overflow
    reseal_checkpoint(LAST)
    before = snapshot(run / "checkpoints")
    line = one_error_line(runner.invoke(app, RESUME))
    assert "at step 3, just after resuming from runs/run/checkpoints/last at step 2: that checkpoint may be" in line
    assert snapshot(run / "checkpoints") == before


def test_an_enabled_grad_scaler_refuses_a_non_finite_scale():
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    with pytest.raises(NashError, match="the grad scaler state's scale is not a finite float > 0"):
        load_grad_scaler_state(scaler, {**scaler.state_dict(), "scale": math.inf})
    with pytest.raises(NashError, match="_growth_tracker is not a finite int >= 0"):
        load_grad_scaler_state(scaler, {**scaler.state_dict(), "_growth_tracker": True})
    load_grad_scaler_state(scaler, {**scaler.state_dict(), "scale": 1024.0})
    assert scaler.get_scale() == 1024.0


# The fuzz test: bytes flipped at random (fixed seeds) in each file of a trained checkpoint.

FUZZ_CASES_PER_FILE = 30


def structure_positions(path: Path) -> "range | list[int]":
    """The byte positions of a file's structure rather than its tensor values: a safetensors header,
    or everything but the tensor payloads in the zip file torch.save writes."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        return range(8 + int.from_bytes(data[:8], "little"))
    payloads = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for entry in archive.infolist():
            if "/data/" in entry.filename:  # a tensor's storage; data.pkl and the zip records are structure
                header = entry.header_offset  # a 30-byte local header, then the name and the extra field
                name_bytes, extra_bytes = struct.unpack("<HH", data[header + 26 : header + 30])
                start = header + 30 + name_bytes + extra_bytes
                payloads.append((start, start + entry.compress_size))
    gap_starts = [0] + [end for _, end in sorted(payloads)]
    gap_ends = [start for start, _ in sorted(payloads)] + [len(data)]
    return [position for start, end in zip(gap_starts, gap_ends) for position in range(start, end)]


def same(a, b) -> bool:
    """Equal values, tensors bitwise with the same dtype (NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def fuzz(checkpoint_dir: Path, name: str, parts: ResumeParts, seeds: range, check_exact: bool, positions=None):
    """Flip bytes of `name` (at `positions`, default anywhere) once per seed and load; returns how
    many cases loaded and how many were refused."""
    expected = parts.load(checkpoint_dir)
    original = (checkpoint_dir / name).read_bytes()
    outcomes = {"loaded": 0, "refused": 0}
    for seed in seeds:
        (checkpoint_dir / name).write_bytes(flip_random_bytes(original, seed, positions or range(len(original))))
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as warned:  # no stray lines around the one error line
            warnings.simplefilter("always")
            try:
                loaded = parts.load(checkpoint_dir)
            except NashError as error:
                assert "\n" not in str(error), (name, seed)
                outcomes["refused"] += 1
            else:
                assert not check_exact or same(loaded, expected), f"seed {seed}: {name} loaded with other values"
                outcomes["loaded"] += 1
        assert not warned, (name, seed, [str(warning.message) for warning in warned])
        assert time.perf_counter() - started < 5, (name, seed)
    (checkpoint_dir / name).write_bytes(original)
    return outcomes


@pytest.mark.parametrize("name", ["model.safetensors", "state.pt", "checkpoint.json"])
def test_a_file_with_flipped_bytes_loads_exactly_or_is_refused(run, resume_parts, name):
    outcomes = fuzz(LAST, name, resume_parts, range(FUZZ_CASES_PER_FILE), check_exact=True)
    assert outcomes["refused"] > 0


@pytest.mark.parametrize("name", ["model.safetensors", "state.pt"])
def test_without_checksums_a_damaged_structure_is_refused_or_loads_never_crashes(run, resume_parts, name):
    # A checkpoint of format 1 (before checksums): only the parsers and the structural checks stand
    # between a damaged header or pickle and the model. Nothing but a NashError may come out.
    meta = json.loads((LAST / "checkpoint.json").read_text())
    stripped = {key: value for key, value in meta.items() if key not in ("files", "content_sha256")}
    (LAST / "checkpoint.json").write_text(json.dumps({**stripped, "format": 1}))
    seeds = range(100, 100 + FUZZ_CASES_PER_FILE)
    outcomes = fuzz(LAST, name, resume_parts, seeds, check_exact=False, positions=structure_positions(LAST / name))
    assert outcomes["refused"] > 0


# Weights in the Hugging Face format: written with the umask's permissions, read checked.


@pytest.fixture
def exported(tmp_path) -> Path:
    model = GPT(ModelConfig(n_layers=1, n_heads=2, d_model=32, d_ff=64, vocab_size=300, max_seq_len=16))
    export_hf(model, tmp_path / "hf")
    return tmp_path / "hf"


def test_checkpoints_and_exports_get_the_permissions_the_umask_gives(trained_template, tmp_path):
    umask = os.umask(0o027)
    try:
        export_hf(GPT(ModelConfig(n_layers=1, n_heads=2, d_model=32, d_ff=64, vocab_size=300)), tmp_path / "hf")
    finally:
        os.umask(umask)
    modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in (tmp_path / "hf").iterdir()}
    assert modes == {"model.safetensors": "0o640", "config.json": "0o640"}
    checkpoint = trained_template / "checkpoints" / "last"
    assert oct(stat.S_IMODE((checkpoint / "model.safetensors").stat().st_mode)) == oct(0o666 & ~umask)


def write_index(folder: Path, shard_name: str) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    index = {"weight_map": {"transformer.wte.weight": shard_name}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


HF_CASES = {
    "truncated": (
        lambda folder: (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:-9]),
        "model.safetensors is not a readable safetensors file",
    ),
    "huge-header": (huge_header, "is not a readable safetensors file"),
    "wrong-shape": (
        lambda folder: replace_weight(folder, "transformer.wte.weight", torch.zeros(5, 32)),
        "transformer.wte.weight is F32 [5, 32] where GPT-2 of its config.json has a float tensor of shape [300, 32]",
    ),
    "int-weights": (
        lambda folder: replace_weight(folder, "transformer.ln_f.bias", torch.zeros(32, dtype=torch.int64)),
        "transformer.ln_f.bias is I64 [32] where",
    ),
    "index-outside": (
        lambda folder: write_index(folder, "../elsewhere.safetensors"), "needs a 'weight_map' of .safetensors file"
    ),
    "index-not-json": (
        lambda folder: write_index(folder, "x") or (folder / "model.safetensors.index.json").write_text("{"),
        "cannot read",
    ),
}


@pytest.mark.parametrize("damage, message", HF_CASES.values(), ids=HF_CASES.keys())
def test_damaged_hugging_face_weights_are_refused_in_one_line(exported, damage, message):
    damage(exported)
    with pytest.raises(NashError) as error:
        load_hf_gpt2(str(exported))
    assert message in str(error.value) and "\n" not in str(error.value)
