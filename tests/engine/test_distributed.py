"""DDP on CPU: two processes under torchrun (gloo) train like one process with the same global batch."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nashcli.config import resolve_config
from nashcli.engine.checkpoint_reading import load_training_state
from nashcli.engine.distributed import DistributedContext, gradient_sync, pick_device, setup_distributed
from nashcli.engine.trainer import train
from nashcli.errors import NashError
from nashcli.runs.metrics import read_metrics


def test_without_torchrun_there_is_one_process_on_the_chosen_device(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = setup_distributed("cpu")
    assert context == DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    assert context.is_main and not context.is_distributed


@pytest.fixture
def two_gpus(monkeypatch):
    """torch.cuda of a machine with two GPUs, recording set_device and leaving TF32 as it was."""
    calls = {"set_device": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls["set_device"].append(torch.device(device)))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    torch.backends.cuda.matmul.allow_tf32 = False
    yield calls
    torch.backends.cuda.matmul.allow_tf32 = False  # torch's default


def test_one_process_on_a_chosen_gpu_makes_it_current_and_allows_tf32(two_gpus):
    context = setup_distributed("cuda:1")
    assert context.device == torch.device("cuda", 1) and two_gpus["set_device"] == [torch.device("cuda", 1)]
    assert torch.backends.cuda.matmul.allow_tf32  # fp32 matmuls (fp32 training, generate) on tensor cores


def test_cpu_matmuls_keep_full_precision():
    assert pick_device("cpu") == torch.device("cpu")
    assert not torch.backends.cuda.matmul.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"


def test_a_gpu_the_machine_lacks_is_one_error(two_gpus):
    with pytest.raises(NashError, match=r"needs cuda:3 but this machine has 2 GPU\(s\)"):
        pick_device("cuda:3")


def test_the_process_group_is_bound_to_the_process_gpu(two_gpus, monkeypatch):
    joined = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **options: joined.update(options))
    context = setup_distributed("auto")
    assert context.device == torch.device("cuda", 1) and two_gpus["set_device"] == [torch.device("cuda", 1)]
    assert joined == {"backend": "nccl", "device_id": torch.device("cuda", 1)}


def test_nash_devices_and_torchrun_match_one_process_with_the_same_global_batch(tiny_dataset, tiny_model_settings):
    """`nash train --devices 2` (torch's elastic launcher as a library) trains exactly as torchrun does,
    and both as one process with the doubled batch; --run names the launched run."""
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
    two_process_settings = [arg for value in settings + ["train.batch_size=2"] for arg in ("--set", value)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nashcli"]
    # Under torchrun, --run would be taken for torchrun's own --run-path (argparse abbreviations).
    torchrun += ["train", "--set", "name=ddp", "--quiet", *two_process_settings]
    launched = [sys.executable, "-m", "nashcli", "train", "--devices", "2", "--run", "launched", *two_process_settings]
    outputs = {}
    for name, command in (("ddp", torchrun), ("launched", launched)):
        finished = subprocess.run(command, capture_output=True, text=True, timeout=180)
        assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
        outputs[name] = finished.stdout

    train(resolve_config(None, settings + ["train.batch_size=4", "name=single"]))
    single = read_metrics(Path("runs/single/metrics.jsonl"))
    for name in ("ddp", "launched"):
        ddp = read_metrics(Path(f"runs/{name}/metrics.jsonl"))
        assert [(r["step"], sorted(r)) for r in ddp] == [(r["step"], sorted(r)) for r in single]  # each record once
        for ddp_record, single_record in zip(ddp, single):
            for key in ("train_loss", "val_loss", "val_accuracy"):
                if key in single_record:
                    assert ddp_record[key] == pytest.approx(single_record[key], abs=1e-5), (name, ddp_record["step"], key)
        assert ddp[-1]["tokens"] == single[-1]["tokens"] == 4 * 2 * 4 * 16
        # Rank 0 alone wrote: one summary, checkpoints with both ranks' states, nothing else.
        assert sorted(path.name for path in Path(f"runs/{name}").iterdir()) == [
            "checkpoints", "config.yaml", "metrics.jsonl", "summary.json"
        ]
        assert outputs[name].count(f"run runs/{name}") == 1  # one final summary table, from rank 0
        state = load_training_state(Path(f"runs/{name}/checkpoints/last"))
        assert state["world_size"] == 2 and len(state["ranks"]) == 2
    # The launched run shows rank 0's display once, as one process would: each step and checkpoint once.
    assert outputs["launched"].count("step 4/4") == 1 and outputs["launched"].count("saved runs/launched/checkpoints/last") == 2


def test_accumulation_micro_steps_skip_the_all_reduce_of_a_compiled_ddp_model():
    """The trainer compiles DDP (not the reverse): gradient_sync must find the DDP module inside."""
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
        compiled = torch.compile(ddp, backend="eager")
        with gradient_sync(compiled, sync=False):
            assert not ddp.require_backward_grad_sync
        with gradient_sync(compiled, sync=True):
            assert ddp.require_backward_grad_sync
    finally:
        torch.distributed.destroy_process_group()
