"""Races, signals and full or read-only disks, with real processes and real file systems: one writer
per run folder or dataset, interrupted runs exit non-zero with their resume command, and a disk
error is one line that loses nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nashcli.cli.app import app
from nashcli.data.pretrain import PretrainBatches
from nashcli.data.dataset_meta import DatasetMeta
from nashcli.folders import FolderLock

from .checks import one_error_line

runner = CliRunner()


def nash(*args: str, **popen) -> subprocess.Popen:
    """`nash ARGS` in a new process, its output captured."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.Popen(
        [sys.executable, "-m", "nashcli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, **popen,
    )


def wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def long_training_args(tiny_dataset, tiny_model_settings) -> list[str]:
    values = tiny_model_settings + [
        f"data.dataset={tiny_dataset}", "train.batch_size=2", "train.max_steps=100000", "train.warmup_steps=1",
        "train.eval_interval=0", "train.checkpoint_interval=0", "train.precision=fp32", "metrics.log_interval=1",
    ]
    return ["--quiet"] + [arg for value in values for arg in ("--set", value)]


@pytest.mark.parametrize("stop_signal, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_running_training_locks_its_folder_and_a_signal_stops_it_non_zero(
    tiny_dataset, tiny_model_settings, stop_signal, exit_code
):
    args = long_training_args(tiny_dataset, tiny_model_settings)
    training = nash("train", "--run", "busy", *args)
    try:
        wait_for(lambda: Path("runs/busy/metrics.jsonl").is_file() and Path("runs/busy/metrics.jsonl").stat().st_size)
        for extra in ([], ["--overwrite"]):
            second = runner.invoke(app, ["train", "--run", "busy", *extra, *args])
            assert f"run runs/busy is being written by another nash process (pid {training.pid})" in one_error_line(second)
        training.send_signal(stop_signal)
        output, _ = training.communicate(timeout=60)
    finally:
        training.kill()
    assert training.returncode == exit_code, output
    assert "continue with: nash train --resume runs/busy" in output
    saved_step = json.loads(Path("runs/busy/checkpoints/last/checkpoint.json").read_text())["step"]
    resumed = runner.invoke(app, ["train", "--resume", "runs/busy", "--set", f"train.max_steps={saved_step + 1}", "--quiet"])
    assert resumed.exit_code == 0, resumed.output  # the lock died with its holder


def test_a_lock_held_by_a_killed_process_is_free(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from nashcli.folders import FolderLock; "
         "FolderLock(Path('data/x'), 'dataset').acquire(); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    result = runner.invoke(app, ["prepare", "shakespeare", "--out", "data/x", "--quiet"])
    assert f"dataset data/x is being written by another nash process (pid {holder.pid})" in one_error_line(result)
    assert not Path("data/x").exists()
    holder.kill()
    holder.wait()
    with FolderLock(Path("data/x"), "dataset"):
        pass


def test_two_prepares_into_one_folder_never_mix(tmp_path):
    """Started together: one is refused (naming the other's pid) or they run one after the other;
    either way the dataset is one whole preparation, every shard matching its meta.json."""
    (tmp_path / "a.txt").write_text("alpha beta gamma. " * 40_000)
    (tmp_path / "b.txt").write_text("one two three four. " * 40_000)
    first, second = (nash("prepare", name, "--out", "data/mixed", "--val-fraction", "0") for name in ("a.txt", "b.txt"))
    outputs = [process.communicate(timeout=120)[0] for process in (first, second)]
    codes = sorted(process.returncode for process in (first, second))
    assert codes in ([0, 0], [0, 2]), outputs
    if codes == [0, 2]:
        refused = outputs[[first.returncode, second.returncode].index(2)]
        assert "is being written by another nash process (pid" in refused
    meta = DatasetMeta.read(Path("data/mixed"))
    tokens = PretrainBatches(Path("data/mixed"), "train", seq_len=8, batch_size=1, seed=0).num_tokens
    assert tokens == meta.splits["train"].tokens
    assert meta.source.endswith(("a.txt", "b.txt"))


@pytest.fixture
def small_disk(tmp_path):
    """mount_small_disk(size, read_only=False) -> a tmpfs of that size (skips where mounting is not allowed)."""
    mounted = []

    def mount(size: str, read_only: bool = False) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True).returncode:
            pytest.skip("mounting a small file system needs root (CI and the dev machines run as root)")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], capture_output=True)


def test_a_full_disk_while_preparing_is_one_line_and_leaves_nothing(small_disk):
    disk = small_disk("1m")
    result = runner.invoke(app, ["prepare", "shakespeare", "--out", str(disk / "shakespeare"), "--quiet"])
    line = one_error_line(result)
    assert "No space left on device" in line and "free some space" in line
    assert list(disk.iterdir()) == []


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(small_disk, tiny_dataset, tiny_model_settings):
    runs_dir = small_disk("30m")
    args = long_training_args(tiny_dataset, tiny_model_settings)
    set_steps = ["--set", f"runs_dir={runs_dir}", "--set", "train.max_steps=2", "--set", "train.checkpoint_interval=1"]
    first = runner.invoke(app, ["train", "--run", "full", *args, *set_steps])
    # A tiny checkpoint is ~19.5 MB (weights and AdamW state): the first fits, the second does not.
    assert "No space left on device" in one_error_line(first)
    last = runs_dir / "full" / "checkpoints" / "last"
    assert json.loads((last / "checkpoint.json").read_text())["step"] == 1
    assert [path.name for path in last.parent.iterdir()] == ["last"]  # no half-written checkpoint left


def test_a_read_only_runs_folder_is_one_line(small_disk, tiny_dataset, tiny_model_settings):
    runs_dir = small_disk("1m")
    subprocess.run(["mount", "-o", "remount,ro", str(runs_dir)], check=True)
    args = long_training_args(tiny_dataset, tiny_model_settings)
    result = runner.invoke(app, ["train", "--run", "ro", *args, "--set", f"runs_dir={runs_dir}"])
    assert "Read-only file system" in one_error_line(result)
