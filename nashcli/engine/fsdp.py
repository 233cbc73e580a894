"""FSDP2 (train.strategy=fsdp): each of N processes keeps 1/N of the weights, gradients and AdamW state.

`fully_shard` goes on every block, then on the root, whose group holds what is outside the blocks:
the token embedding (also the tied LM head), the position embedding and the final norm. A group's
weights are all-gathered just before its forward (and again before its backward) and freed after;
its gradients are reduce-scattered, averaged like DDP's all-reduce, so every process ends a step
with its shard of the mean gradient. The parameters become DTensors in place, so AdamW built over
them afterwards keeps state for its shard only: shard first, then build the optimizer.

Checkpoints keep nash's format: rank 0 writes the full weights and the full optimizer state,
gathered to its CPU one tensor at a time, in the layout a single process's AdamW saves (parameter
ids, full-shape buffers); a resume shards them again. So an FSDP checkpoint loads in `nash eval`,
`generate` and `export`, and resumes under ddp or fsdp alike.

With one process there is nothing to shard: strategy=fsdp then trains the unsharded model exactly
as ddp does (no process group, no DTensors), and the run says so in a note.

torch.distributed.fsdp and torch.distributed.tensor are imported when a model is sharded: they cost
a second or two that unsharded runs do not pay.
"""

import contextlib
import sys
from pathlib import Path

import torch
from torch import nn

from nashcli.config import TrainConfig
from nashcli.engine import distributed as dist_ops
from nashcli.engine.checkpoint_reading import load_model_weights, read_model_weights
from nashcli.engine.distributed import DistributedContext, is_sharded
from nashcli.engine.optim import Optimizers
from nashcli.engine.precision import Precision
from nashcli.errors import NashError
from nashcli.model.gpt import GPT
from nashcli.tensor_files import TensorSpec


def uses_fsdp(strategy: str, context: DistributedContext) -> bool:
    """Whether this run shards its model: train.strategy=fsdp with several processes."""
    return strategy == "fsdp" and context.is_distributed


def strategy_notes(strategy: str, context: DistributedContext) -> list[str]:
    """One-line remarks about the strategy for the run's display."""
    if strategy == "fsdp" and not context.is_distributed:
        return ["train.strategy=fsdp with one process: nothing to shard, so the model trains unsharded (as with ddp)"]
    return []


def check_fsdp_run(train: TrainConfig) -> None:
    """NashError for a setting a sharded run cannot serve (call it before sharding)."""
    if train.eval_tasks:
        # Task scoring calls the model's parts (not its forward, which gathers the root's weights),
        # and each process scores its own number of batches, while FSDP's all-gathers need every
        # process to run the same forward passes.
        raise NashError(
            "train.eval_tasks are not scored under train.strategy=fsdp: drop them (--set 'train.eval_tasks=[]') "
            "and score a checkpoint with `nash eval RUN --task NAME`, or use train.strategy=ddp"
        )


def mixed_precision_policy(precision: Precision) -> "MixedPrecisionPolicy":
    """bf16: weights all-gathered and used in bf16 (half the traffic and memory of fp32), gradients
    reduce-scattered in fp32; the sharded weights AdamW updates stay fp32. fp32 and fp16 gather fp32
    weights: fp16's narrow range makes a whole-fp16 residual stream risky, and autocast already runs
    the matmuls in fp16 with the grad scaler guarding the gradients."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if precision.name == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard_model(model: GPT, context: DistributedContext, precision: Precision) -> None:
    """fully_shard every block, then the root, in place over all processes of `context`.

    Call it before the optimizer is built: AdamW must hold the sharded parameters (DTensors). Every
    process must hold the same weights (same seed, same --init-from file): unlike DDP, fully_shard
    does not broadcast rank 0's, each process keeps its slice of its own.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(context.device.type, (context.world_size,))
    policy = mixed_precision_policy(precision)
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)  # the embeddings (tied head) and the final norm


def gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient reduction on accumulation micro-steps (`sync=False`): DDP's no_sync, or
    FSDP's set_requires_gradient_sync(False). Gradients then accumulate unsharded and locally, and
    are reduced once, in the backward of the step's last micro-batch."""
    if sync or not is_sharded(model):
        return dist_ops.gradient_sync(model, sync)
    return _without_gradient_sync(getattr(model, "_orig_mod", model))


@contextlib.contextmanager
def _without_gradient_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)  # every FSDP group inside it too
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def gathered_model_state(model: nn.Module, context: DistributedContext) -> dict[str, torch.Tensor]:
    """The full weights for a checkpoint: `model.state_dict()`, or for a sharded model its weights
    gathered to rank 0's CPU one tensor at a time (other ranks get {}). Every process must call it."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def gathered_optimizer_state(optimizers: Optimizers, context: DistributedContext) -> dict:
    """`optimizers.state_dict()` with every sharded buffer gathered whole to rank 0's CPU: the layout
    a single process's optimizer saves, so DDP can resume it. Every process must call it; ranks
    other than 0 get the unsharded parts only. (torch's get_optimizer_state_dict keys the state by
    parameter name instead of nash's parameter ids, hence this.)"""
    state = optimizers.state_dict()
    dtensor = _dtensor_type()
    return state if dtensor is None else _gathered(state, dtensor, keep=context.is_main)


def _gathered(value: object, dtensor: type, keep: bool) -> object:
    # Every process walks the same structure in the same order, so the all-gathers pair up.
    if isinstance(value, dtensor):
        full = value.full_tensor()
        return full.cpu() if keep else None
    if isinstance(value, dict):
        return {key: _gathered(item, dtensor, keep) for key, item in value.items()}
    if isinstance(value, list):
        return [_gathered(item, dtensor, keep) for item in value]
    return value


def load_weights(model: nn.Module, checkpoint_dir: Path) -> None:
    """Load a checkpoint's full weights into `model`, sharded or not, once they are all checked
    (checkpoint_reading.read_model_weights). Every process reads the file; under FSDP each keeps its
    shard."""
    if not is_sharded(model):
        load_model_weights(model, checkpoint_dir)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    expected = {key: TensorSpec.of(tensor) for key, tensor in model.state_dict().items()}  # global shapes
    tensors = read_model_weights(checkpoint_dir, expected)
    set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True))


def accept_full_optimizer_state(optimizers: Optimizers) -> None:
    """Let `optimizers.load_state_dict` take a full state (a checkpoint's) when its parameters are
    sharded: each full buffer is cut into this process's shard of its parameter.

    The checks of Optimizers.load_state_dict run first, on the full tensors, the same on every process
    (every process reads the same file), so a bad state is refused on all of them alike. No-op for
    unsharded parameters."""
    for part in optimizers.parts.values():
        part.register_load_state_dict_pre_hook(_shard_full_state)


def _shard_full_state(optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """An optimizer load_state_dict pre-hook: `state` with every full-shape buffer of a DTensor
    parameter replaced by that parameter's shard of it (the caller's dict is left unchanged)."""
    dtensor = _dtensor_type()
    if dtensor is None:
        return state
    saved_ids = [parameter_id for group in state["param_groups"] for parameter_id in group["params"]]
    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    parameter_of = dict(zip(saved_ids, parameters))  # the order load_state_dict pairs them in
    sharded = {}
    for parameter_id, parameter_state in state["state"].items():
        parameter = parameter_of.get(parameter_id)
        if isinstance(parameter, dtensor):
            parameter_state = {name: _shard_like(value, parameter) for name, value in parameter_state.items()}
        sharded[parameter_id] = parameter_state
    return {**state, "state": sharded}


def _shard_like(value: object, parameter: torch.Tensor) -> object:
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(value, torch.Tensor) or isinstance(value, DTensor) or value.shape != parameter.shape:
        return value  # scalars such as AdamW's step stay whole
    # src_data_rank=None: every process holds the same full tensor and keeps its own slice, no messages.
    full = value.to(device=parameter.device, dtype=parameter.dtype)
    shard = distribute_tensor(full, parameter.device_mesh, parameter.placements, src_data_rank=None)
    # The slice is a view of the full tensor: copied out, so that the full buffer is freed.
    local = shard.to_local().clone()
    return DTensor.from_local(
        local, parameter.device_mesh, parameter.placements, run_check=False, shape=shard.shape, stride=shard.stride()
    )


def _dtensor_type() -> "type | None":
    """DTensor, once torch.distributed.tensor is loaded; None before, when no tensor can be one."""
    module = sys.modules.get("torch.distributed.tensor")
    return None if module is None else module.DTensor
