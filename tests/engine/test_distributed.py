"""DDP on CPU: two processes under torchrun (gloo) train like one process with the same global batch."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nashcli.config import resolve_config
from nashcli.engine.checkpoint_reading import load_training_state
from nashcli.engine.distributed import DistributedContext, setup_distributed
from nashcli.engine.trainer import train
from nashcli.runs.metrics import read_metrics


def test_without_torchrun_there_is_one_process_on_the_chosen_device(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = setup_distributed("cpu")
    assert context == DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    assert context.is_main and not context.is_distributed


def test_two_processes_match_one_process_with_the_same_global_batch(tiny_dataset, tiny_model_settings):
    settings = tiny_model_settings + [
        f"data.dataset={tiny_dataset}",
        "train.max_steps=4",
        "train.warmup_steps=1",
        "train.grad_accum_steps=2",
        "train.eval_interval=2",
        "train.eval_batches=2",
        "train.checkpoint_interval=2",
        "train.precision=fp32",
        "train.device=cpu",
        "metrics.log_interval=1",
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nashcli"]
    # Under torchrun, --run would be taken for torchrun's own --run-path (argparse abbreviations).
    command += ["train", "--set", "name=ddp", "--quiet"]
    command += [arg for value in settings + ["train.batch_size=2"] for arg in ("--set", value)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]

    train(resolve_config(None, settings + ["train.batch_size=4", "name=single"]))
    ddp = read_metrics(Path("runs/ddp/metrics.jsonl"))
    single = read_metrics(Path("runs/single/metrics.jsonl"))
    assert [(r["step"], sorted(r)) for r in ddp] == [(r["step"], sorted(r)) for r in single]  # each record once
    for ddp_record, single_record in zip(ddp, single):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            if key in single_record:
                assert ddp_record[key] == pytest.approx(single_record[key], abs=1e-5), (ddp_record["step"], key)
    assert ddp[-1]["tokens"] == single[-1]["tokens"] == 4 * 2 * 4 * 16
    # Rank 0 alone wrote: one summary, checkpoints with both ranks' states, nothing else.
    assert sorted(path.name for path in Path("runs/ddp").iterdir()) == [
        "checkpoints", "config.yaml", "metrics.jsonl", "summary.json"
    ]
    assert finished.stdout.count("run runs/ddp") == 1  # one final summary table, from rank 0
    state = load_training_state(Path("runs/ddp/checkpoints/last"))
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
