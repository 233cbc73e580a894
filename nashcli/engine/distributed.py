"""Processes and devices: one process, or DDP under `nash train --devices N` or torchrun (nccl on
GPUs, gloo on CPUs).

The launcher (engine/launch.py, or torchrun) sets RANK, WORLD_SIZE and LOCAL_RANK (and
MASTER_ADDR/MASTER_PORT) for every process it starts; `setup_distributed` reads them, so
`torchrun --nproc_per_node=N -m nashcli train ...` needs no flag of its own. Everything that has
to agree across processes (token counts, losses, the stop request) goes through the small
collectives here; with one process they are no-ops.
"""

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from nashcli.errors import NashError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: its rank among `world_size` processes and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, logs and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_setting: str) -> DistributedContext:
    """Join the process group torchrun describes (if any) and pick this process's device.

    `device_setting` is train.device: auto prefers CUDA, then MPS (single process), then CPU. Under
    torchrun each process takes cuda:LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_setting, local_rank, world_size)
    if device.type == "cuda":
        # Also with one process on cuda:N: the current device is where torch.cuda's defaults (RNG
        # state, memory statistics, compiled kernels) go.
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            # device_id binds the process group to this GPU at once (no guessing, no lazy NCCL set-up).
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def teardown_distributed(context: DistributedContext) -> None:
    if context.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def pick_device(setting: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device for train.device-style `setting` (auto, cpu, mps, cuda, cuda:N) in this process;
    NashError when the asked-for device is not available. On a CUDA device, fp32 matmuls may use
    TF32 tensor cores from then on (see use_tf32_matmuls)."""
    device = _choose_device(setting, local_rank, world_size)
    if device.type == "cuda":
        if device.index is not None and device.index >= torch.cuda.device_count():
            where = f"process {local_rank} of this machine" if world_size > 1 else f"train.device={setting}"
            raise NashError(
                f"{where} needs cuda:{device.index} but this machine has {torch.cuda.device_count()} GPU(s): "
                "start at most one process per GPU (--devices N) or pick another GPU"
            )
        use_tf32_matmuls()
    return device


def _choose_device(setting: str, local_rank: int, world_size: int) -> torch.device:
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if world_size == 1 and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if setting.startswith("cuda"):
        if not torch.cuda.is_available():
            raise NashError(
                f"train.device={setting} but this torch build sees no CUDA GPU: use --set train.device=auto"
            )
        if setting == "cuda" or world_size > 1:
            return torch.device("cuda", local_rank)
        return torch.device(setting)
    if setting == "mps":
        if not torch.backends.mps.is_available():
            raise NashError("train.device=mps but MPS is not available: use --set train.device=auto")
        if world_size > 1:
            raise NashError("train.device=mps does not support several processes: run one process (no --devices)")
    return torch.device(setting)


def use_tf32_matmuls() -> None:
    """Let fp32 matmuls on CUDA use TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation):
    several times faster for fp32 training and for `nash generate`, and what autocast-free code on
    Ampere and later GPUs is expected to run with. CPU matmuls are left as they are.

    The CUDA-only switch: torch.set_float32_matmul_precision("high") would also change CPU (oneDNN)
    matmuls, and the newer `fp32_precision` setting makes torch.get_float32_matmul_precision(),
    which inductor calls, raise."""
    torch.backends.cuda.matmul.allow_tf32 = True


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum `tensor` over all processes, in place; returns it for chaining."""
    if context.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(value: object, context: DistributedContext) -> list:
    """Every process's `value` (picklable), in rank order; [value] with one process."""
    if not context.is_distributed:
        return [value]
    gathered: list = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: object, context: DistributedContext) -> object:
    """Rank 0's `value`, on every process."""
    if not context.is_distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(context: DistributedContext) -> None:
    if context.is_distributed:
        dist.barrier()


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """DDP around `model` when there are several processes (it broadcasts rank 0's weights). A model
    FSDP already sharded (engine/fsdp.py, possibly compiled since) is returned as it is: it reduces
    its own gradients."""
    if not context.is_distributed or is_sharded(model):
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def is_sharded(model: nn.Module) -> bool:
    """Whether FSDP sharded `model` (or the model inside its torch.compile wrapper): engine/fsdp.py.

    Asked without importing torch.distributed.fsdp, which costs a second or two that an unsharded
    run should not pay: no model is sharded before that module is loaded."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(getattr(model, "_orig_mod", model), fsdp.FSDPModule)


def gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce on accumulation micro-steps (`sync=False`).

    Gradients then accumulate locally and are all-reduced once, on the last micro-batch of the step.
    """
    ddp = getattr(model, "_orig_mod", model)  # torch.compile's wrapper of a DDP model keeps it here
    if sync or not isinstance(ddp, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()
