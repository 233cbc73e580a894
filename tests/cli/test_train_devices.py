"""`nash train --devices N`: the options, and 2 real training processes (gloo on CPU) that stop, fail
and report as one process does. The run's numbers are compared with torchrun's and one process's in
tests/engine/test_distributed.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nashcli.cli.app import app
from nashcli.engine.launch import LaunchPlan, plan_processes
from nashcli.engine.trainer import train
from nashcli.errors import NashError
from nashcli.runs.metrics import read_metrics

from tests.robustness.checks import one_error_line

runner = CliRunner()


def nash(*args: str) -> subprocess.Popen:
    """`nash ARGS` in a new process, stdout and stderr together."""
    return subprocess.Popen(
        [sys.executable, "-m", "nashcli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "WANDB_MODE": "offline"},
    )


def wait_for(condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def long_run_args(tiny_dataset, tiny_model_settings, *extra: str) -> list[str]:
    values = tiny_model_settings + [
        f"data.dataset={tiny_dataset}", "train.batch_size=2", "train.max_steps=100000", "train.warmup_steps=1",
        "train.eval_interval=0", "train.checkpoint_interval=0", "train.precision=fp32", "train.device=cpu",
        "metrics.log_interval=1", *extra,
    ]
    return [arg for value in values for arg in ("--set", value)]


def has_trained(run: str):
    metrics = Path(f"runs/{run}/metrics.jsonl")
    return lambda: metrics.is_file() and metrics.stat().st_size > 0


def worker_pid(launcher_pid: int, rank: int) -> int:
    """The pid of the training process of `rank` that the launcher started (Linux /proc)."""
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    for pid in map(int, children):
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environment:
            return pid
    raise AssertionError(f"no process of rank {rank} among {children}")


def test_devices_auto_is_one_process_on_a_cpu_and_bad_values_are_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    assert plan_processes("auto", "auto") == LaunchPlan(processes_per_node=1)
    assert plan_processes("3", "cpu").world_size == 3
    assert plan_processes("2", "cpu", nodes=2, node_rank=1, master_addr="node0").world_size == 4
    for devices, nodes, node_rank, master_addr, message in [
        ("0", 1, 0, None, "--devices 0: give a number of processes per machine"),
        ("two", 1, 0, None, "--devices two: give a number of processes per machine"),
        ("2", 2, 0, None, "--nodes 2 needs --master-addr HOST"),
        ("2", 2, 2, "node0", "the node rank must be 0 to 1"),
    ]:
        with pytest.raises(NashError, match=message):
            plan_processes(devices, "cpu", nodes, node_rank, master_addr)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # under torchrun
    with pytest.raises(NashError, match="use one of the two"):
        plan_processes("2", "cpu")


def test_devices_beyond_the_gpus_of_the_machine_is_one_line(monkeypatch, train_args):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    result = runner.invoke(app, ["train", "--devices", "4", *train_args()])
    assert "--devices 4 but this machine has 2 GPU(s)" in one_error_line(result)


def test_ctrl_c_stops_every_process_saves_last_once_and_the_run_resumes(tiny_dataset, tiny_model_settings):
    args = long_run_args(tiny_dataset, tiny_model_settings)
    training = nash("train", "--devices", "2", "--run", "busy", *args)
    try:
        wait_for(has_trained("busy"))
        training.send_signal(signal.SIGINT)  # to the launcher alone, as a terminal's Ctrl-C is
        output, _ = training.communicate(timeout=90)
    finally:
        training.kill()
    assert training.returncode == 130, output
    assert output.count("saved runs/busy/checkpoints/last") == 1, output  # saved once, by rank 0
    assert "continue with: nash train --devices 2 --resume runs/busy" in output
    assert "Traceback" not in output and output.count("run runs/busy") == 1
    saved = json.loads(Path("runs/busy/checkpoints/last/checkpoint.json").read_text())
    assert saved["world_size"] == 2 and [path.name for path in Path("runs/busy/checkpoints").iterdir()] == ["last"]
    assert not Path("runs/busy/summary.json").exists()  # stopped, not finished

    step = saved["step"]
    resumed = subprocess.run(
        [sys.executable, "-m", "nashcli", "train", "--devices", "2", "--resume", "runs/busy", "--quiet",
         "--set", f"train.max_steps={step + 2}"],
        capture_output=True, text=True, timeout=180,
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    steps = [record["step"] for record in read_metrics(Path("runs/busy/metrics.jsonl")) if "train_loss" in record]
    assert steps == list(range(1, step + 3))  # continued where it stopped, each step once


def test_a_user_error_in_one_process_is_the_same_one_line(tiny_config, reseal_checkpoint):
    """Rank 1 alone reads its part of state.pt (its data position), damaged here: the launcher shows
    that process's error as the one line a single process shows, not the others' consequences."""
    train(tiny_config("name=two", "train.max_steps=2", "train.checkpoint_interval=2", "train.device=cpu"))
    last = Path("runs/two/checkpoints/last")
    state = torch.load(last / "state.pt", weights_only=True)
    damaged_rank = {**state["ranks"][0], "data": {"order": {"items_consumed": "many"}}}
    torch.save({**state, "world_size": 2, "ranks": [state["ranks"][0], damaged_rank]}, last / "state.pt")
    reseal_checkpoint(last, lambda meta: meta.update(world_size=2))

    resumed = subprocess.run(
        [sys.executable, "-m", "nashcli", "train", "--devices", "2", "--resume", "runs/two",
         "--set", "train.max_steps=4"],
        capture_output=True, text=True, timeout=180,
    )
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    assert resumed.stdout == ""
    assert resumed.stderr.strip().splitlines() == [
        "error: runs/two/checkpoints/last/state.pt cannot be resumed from: the data position must hold the "
        "integers items_consumed, num_items, seed"
    ]


def test_a_killed_process_ends_the_others_with_one_line(tiny_dataset, tiny_model_settings):
    args = long_run_args(tiny_dataset, tiny_model_settings)
    training = nash("train", "--devices", "2", "--run", "crash", "--quiet", *args)
    try:
        wait_for(has_trained("crash"))
        victim = worker_pid(training.pid, rank=1)
        os.kill(victim, signal.SIGKILL)
        output, _ = training.communicate(timeout=90)  # the agent's shutdown timeout (30 s) bounds it
    finally:
        training.kill()
    assert training.returncode == 1, output
    lines = output.strip().splitlines()
    assert lines == [
        f"error: training process rank 1 of 2 (pid {victim}) was killed by SIGKILL (the kernel does this when "
        "memory runs out); the other processes were stopped"
    ], output
