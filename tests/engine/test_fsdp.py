"""FSDP2 on CPU: two gloo processes under torchrun train like DDP, and write checkpoints in nash's
format that `nash eval` loads and that resume under FSDP (bitwise) and under DDP.

One torchrun launch runs every training of the module, so the processes start once: see WORKER."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nashcli.cli.app import app
from nashcli.config import resolve_config
from nashcli.engine.checkpoint_reading import load_training_state
from nashcli.engine.distributed import DistributedContext
from nashcli.engine.fsdp import check_fsdp_run, strategy_notes
from nashcli.engine.reporter import SilentReporter
from nashcli.engine.trainer import train
from nashcli.errors import NashError
from nashcli.runs.metrics import read_metrics

# Every training of the module, in both processes: DDP and FSDP uninterrupted; two FSDP runs stopped
# by a Ctrl-C (rank 0's, after step 4: step 5 finishes and saves `last`), one resumed under FSDP and
# one under DDP; then the mixed-precision and grad-scaler checks, written to checks.json by rank 0.
WORKER = r"""
import json, os, signal, sys
from pathlib import Path

import torch
import torch.distributed as dist

from nashcli.config import override_config
from nashcli.engine import trainer
from nashcli.engine.distributed import setup_distributed
from nashcli.engine.fsdp import shard_model
from nashcli.engine.optim import build_optimizer
from nashcli.engine.precision import Precision, make_grad_scaler
from nashcli.engine.reporter import SilentReporter
from nashcli.model.gpt import GPT

base = json.loads(Path("config.json").read_text())
# One process group serves every training: gloo's rendezvous can hang when a group is made again
# in the same processes, so each train() finds the group joined and leaves it up.
context = setup_distributed("cpu")
trainer.teardown_distributed = lambda context: None
# FSDP reduce-scatters each group's gradients through this function: count the calls of each run.
reduce_scatters = []
reduce_scatter = dist.reduce_scatter_single
dist.reduce_scatter_single = lambda *args, **kwargs: reduce_scatters.append(1) or reduce_scatter(*args, **kwargs)
reduce_scatters_per_run = []


class CtrlCAfter(SilentReporter):
    def __init__(self, step):
        self.step = step

    def on_step(self, record):
        if record.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def run(name, strategy, **kwargs):
    reduce_scatters.clear()
    summary = trainer.train(override_config(base, [f"name={name}", f"train.strategy={strategy}"]), **kwargs)
    reduce_scatters_per_run.append(len(reduce_scatters))
    return summary


run("ddp", "ddp")
run("fsdp", "fsdp")
for name in ("fsdp-then-fsdp", "fsdp-then-ddp"):
    assert run(name, "fsdp", reporter=CtrlCAfter(4)).steps == 5
run("fsdp-then-fsdp", "fsdp", resume=Path("runs/fsdp-then-fsdp"))
run("fsdp-then-ddp", "ddp", resume=Path("runs/fsdp-then-ddp"))

# bf16: the blocks run on bf16 copies of the weights; the shards AdamW updates, and their gradients
# (reduced in fp32), stay fp32.
torch.manual_seed(0)
model = GPT(override_config(base, []).model)
shard_model(model, context, Precision("bf16", "cpu"))
seen = []
model.blocks[0].mlp.up.register_forward_hook(lambda module, args, out: seen.append(str(module.weight.dtype)))
inputs = torch.randint(0, 50257, (2, 16))
model(inputs, inputs).backward()
weight = model.blocks[0].mlp.up.weight
checks = {
    "reduce_scatters_per_run": reduce_scatters_per_run,
    "forward_dtype": seen[0],
    "shard_dtype": str(weight.dtype),
    "grad_dtype": str(weight.grad.dtype),
}
# fp16, stepped as the trainer steps: an overflow in one process's gradient shard skips the step in
# every process, and the next step, without one, is taken in every process.
optimizer = build_optimizer(model, override_config(base, []).train, torch.device("cpu"))  # fused AdamW
scaler = make_grad_scaler(Precision("fp16", "cpu"))
stepped = []
for overflow in (True, False):
    optimizer.zero_grad()
    scaler.scale(model(inputs, inputs)).backward()
    if overflow and context.rank == 1:
        weight.grad.to_local().view(-1)[0] = float("inf")
    optimizer.unscale_gradients(scaler)
    before = weight.to_local().clone()
    optimizer.step(scaler)
    scaler.update()
    changed = torch.tensor([float(not torch.equal(before, weight.to_local()))])
    dist.all_reduce(changed)
    stepped.append(int(changed.item()))
checks["processes_that_stepped"] = stepped
if context.rank == 0:
    Path("checks.json").write_text(json.dumps(checks))
dist.destroy_process_group()
"""

SETTINGS = [
    "train.max_steps=10",
    "train.warmup_steps=2",
    "train.grad_accum_steps=2",
    "train.batch_size=2",
    "train.eval_interval=5",
    "train.eval_batches=2",
    "train.checkpoint_interval=5",
    "train.precision=fp32",
    "train.device=cpu",
    "metrics.log_interval=1",
]


@pytest.fixture(scope="module")
def fsdp_runs(tiny_config, tmp_path_factory) -> Path:
    """The folder WORKER ran in, under torchrun with 2 processes, on the tiny model and corpus."""
    folder = tmp_path_factory.mktemp("fsdp")
    (folder / "worker.py").write_text(WORKER, encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(tiny_config(*SETTINGS).model_dump(mode="json")), encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "worker.py"]
    # A session of its own: a hang is ended with every process torchrun started, none left behind.
    launch = subprocess.Popen(
        command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = launch.communicate(timeout=300)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.communicate()
    assert launch.returncode == 0, output[-5000:]
    return folder


def records(folder: Path, run: str, key: str) -> list:
    return [(r["step"], r[key]) for r in read_metrics(folder / "runs" / run / "metrics.jsonl") if key in r]


def test_fsdp_trains_like_ddp_with_gradient_accumulation(fsdp_runs):
    # grad_norm is the global norm of the sharded gradients. The gradients of a step matched DDP's bit
    # for bit when checked by hand; the norm, summed shard by shard, differs in its last bits (1e-6),
    # which AdamW then amplifies where gradients are nearly zero: so a looser tolerance than the
    # losses', which a norm over one shard only (about 30% off) would still fail.
    for key, tolerance in (("train_loss", dict(abs=1e-5)), ("val_loss", dict(abs=1e-5)), ("grad_norm", dict(rel=1e-3))):
        ddp, fsdp = records(fsdp_runs, "ddp", key), records(fsdp_runs, "fsdp", key)
        assert [step for step, _ in fsdp] == [step for step, _ in ddp] and ddp, key
        for (step, expected), (_, value) in zip(ddp, fsdp):
            assert value == pytest.approx(expected, **tolerance), (key, step)


def test_an_fsdp_checkpoint_holds_what_a_ddp_checkpoint_holds(fsdp_runs):
    ddp = load_training_state(fsdp_runs / "runs/ddp/checkpoints/last")["optimizer"]["adamw"]
    fsdp = load_training_state(fsdp_runs / "runs/fsdp/checkpoints/last")["optimizer"]["adamw"]
    assert [group["params"] for group in fsdp["param_groups"]] == [group["params"] for group in ddp["param_groups"]]
    assert sorted(fsdp["state"]) == sorted(ddp["state"])
    for parameter_id, state in ddp["state"].items():
        for name, value in state.items():  # full-shape buffers, by parameter id, as a single process saves them
            assert torch.allclose(fsdp["state"][parameter_id][name], value, rtol=1e-4, atol=1e-6), (parameter_id, name)


def test_an_fsdp_checkpoint_loads_in_nash_eval(fsdp_runs, monkeypatch):
    monkeypatch.chdir(fsdp_runs)
    results = {}
    for run in ("ddp", "fsdp"):
        arguments = ["eval", f"runs/{run}", "--checkpoint", "last", "--max-batches", "2", "--json"]
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 0, result.output
        results[run] = json.loads(result.stdout.strip().splitlines()[-1])["val_loss"]
    assert results["fsdp"] == pytest.approx(results["ddp"], abs=1e-5)


def test_an_fsdp_run_resumes_bitwise_under_fsdp_and_closely_under_ddp(fsdp_runs):
    for key in ("train_loss", "val_loss", "grad_norm"):
        straight = records(fsdp_runs, "fsdp", key)
        assert records(fsdp_runs, "fsdp-then-fsdp", key) == straight, key  # exact float equality
        resumed_by_ddp = records(fsdp_runs, "fsdp-then-ddp", key)
        assert [step for step, _ in resumed_by_ddp] == [step for step, _ in straight]
        tolerance = {"rel": 1e-3} if key == "grad_norm" else {"abs": 1e-5}  # as in the DDP comparison above
        for (step, expected), (_, value) in zip(straight, resumed_by_ddp):
            assert value == pytest.approx(expected, **tolerance), (key, step)


def test_a_sharded_step_reduce_scatters_each_group_once_whatever_its_micro_batches(fsdp_runs):
    checks = json.loads((fsdp_runs / "checks.json").read_text())
    # Runs in WORKER's order: ddp, fsdp, the two stopped fsdp runs, their fsdp and ddp resumes. A
    # sharded step of 2 micro-batches reduce-scatters each FSDP group (2 blocks and the root) once.
    assert checks.pop("reduce_scatters_per_run") == [0, 10 * 3, 5 * 3, 5 * 3, 5 * 3, 0]


def test_bf16_blocks_run_on_fp32_shards_and_an_fp16_overflow_skips_the_step_everywhere(fsdp_runs):
    checks = json.loads((fsdp_runs / "checks.json").read_text())
    checks.pop("reduce_scatters_per_run")
    assert checks == {
        "forward_dtype": "torch.bfloat16",
        "shard_dtype": "torch.float32",
        "grad_dtype": "torch.float32",
        "processes_that_stepped": [0, 2],  # after an overflow in one process, then after none
    }


def test_fsdp_with_one_process_trains_unsharded_and_says_so(tiny_config):
    class StartRecorder(SilentReporter):
        def on_start(self, info):
            self.notes = info.notes

    recorder = StartRecorder()
    summary = train(tiny_config("train.strategy=fsdp", "train.max_steps=2", "name=alone"), reporter=recorder)
    assert not summary.interrupted
    assert "train.strategy=fsdp with one process: nothing to shard, so the model trains unsharded (as with ddp)" in (
        recorder.notes
    )
    pair = DistributedContext(rank=0, local_rank=0, world_size=2, device=torch.device("cpu"))
    assert strategy_notes("fsdp", pair) == []


def test_eval_tasks_under_fsdp_are_refused_in_one_line():
    with pytest.raises(NashError, match=r"train.eval_tasks are not scored under train.strategy=fsdp") as raised:
        check_fsdp_run(resolve_config(None, ["train.strategy=fsdp", "train.eval_tasks=[hellaswag]"]).train)
    assert "\n" not in str(raised.value)
    check_fsdp_run(resolve_config(None, ["train.strategy=fsdp"]).train)
