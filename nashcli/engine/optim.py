"""The optimizers (AdamW, or Muon with AdamW), their param groups, and checked loading of a saved state."""

from typing import Optional, Sequence

import torch
from torch import nn

from nashcli.config.models import TrainConfig
from nashcli.engine.muon import Muon, orthogonalize_dtype
from nashcli.errors import NashError
from nashcli.value_checks import is_finite_number, is_int


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weight matrices, and everything else undecayed.

    Biases and LayerNorm gains are vectors (dim < 2); pulling them towards zero only hurts. The
    embeddings are matrices but are excluded too (GPT-2 practice): most rows see few gradient
    updates, so decay would mostly shrink rare tokens. The LM head tied to the token embedding is
    the same Parameter, so it is excluded with it and appears once.
    """
    embedding_ids = _embedding_parameter_ids(model)
    decayed, undecayed = [], []
    for parameter in model.parameters():  # yields each shared Parameter once
        if not parameter.requires_grad:
            continue
        if parameter.dim() < 2 or id(parameter) in embedding_ids:
            undecayed.append(parameter)
        else:
            decayed.append(parameter)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": undecayed, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, train: TrainConfig, device: torch.device) -> "Optimizers":
    """The optimizers that train.optimizer names, each param group with its own base learning rate.

    adamw: AdamW over `parameter_groups`. muon: Muon for the 2-D matrices inside the blocks, and
    AdamW for the rest (`muon_parameter_groups`). AdamW is fused into one kernel per group on CUDA
    and CPU: much faster than the per-parameter loop on CPU too (bench/README.md); other devices use
    the multi-tensor (foreach) path. The trainer sets every group's learning rate each step from the
    schedule, so the values given here are the base (peak) ones.
    """
    settings = train.optimizer
    if settings.name == "adamw":
        return Optimizers({"adamw": _adamw(parameter_groups(model, train.weight_decay), train, device)})
    matrices, adamw_groups = muon_parameter_groups(model, train)
    muon = Muon(
        matrices,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        momentum=settings.momentum,
        nesterov=settings.nesterov,
        ns_steps=settings.ns_steps,
        orthogonalize_dtype=orthogonalize_dtype(device),
    )
    return Optimizers({"muon": muon, "adamw": _adamw(adamw_groups, train, device)})


def muon_parameter_groups(model: nn.Module, train: TrainConfig) -> tuple[list[nn.Parameter], list[dict]]:
    """The matrices Muon trains (every 2-D parameter inside the blocks), and AdamW's groups for the
    rest: the embeddings (optimizer.embedding_lr, undecayed), an untied LM head (optimizer.head_lr,
    decayed: it is 2-D but maps to the vocabulary, which Muon's orthogonal updates do not suit), and
    the norms and biases (train.lr, undecayed). Empty groups are left out."""
    settings = train.optimizer
    embedding_ids = _embedding_parameter_ids(model)
    matrices, embeddings, head, vectors = [], [], [], []
    for name, parameter in model.named_parameters():  # each shared Parameter once
        if not parameter.requires_grad:
            continue
        if id(parameter) in embedding_ids:
            embeddings.append(parameter)
        elif parameter.dim() < 2:
            vectors.append(parameter)
        elif name.startswith("blocks."):
            matrices.append(parameter)
        else:
            head.append(parameter)
    groups = [
        {"params": embeddings, "lr": settings.embedding_lr or train.lr, "weight_decay": 0.0},
        {"params": head, "lr": settings.head_lr or train.lr, "weight_decay": train.weight_decay},
        {"params": vectors, "lr": train.lr, "weight_decay": 0.0},
    ]
    return matrices, [group for group in groups if group["params"]]


def _adamw(groups: list[dict], train: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        groups, lr=train.lr, betas=tuple(train.betas), fused=fused, foreach=None if fused else True
    )


def _embedding_parameter_ids(model: nn.Module) -> set[int]:
    return {
        id(parameter)
        for module in model.modules()
        if isinstance(module, nn.Embedding)
        for parameter in module.parameters(recurse=False)
    }


class Optimizers:
    """The optimizers of one run, stepped as one: AdamW alone, or Muon and AdamW side by side.

    `param_groups` lists every group of every part in order, so the trainer's schedule treats Muon
    and AdamW groups alike. The state is one dict per part, by name, so a checkpoint says which
    optimizer made it and a resume with another one is refused in one line.
    """

    def __init__(self, parts: dict[str, torch.optim.Optimizer]):
        self.parts = parts

    @property
    def name(self) -> str:
        return next(iter(self.parts))  # the part that defines the recipe comes first

    @property
    def param_groups(self) -> list[dict]:
        return [group for part in self.parts.values() for group in part.param_groups]

    def unscale_gradients(self, grad_scaler: torch.amp.GradScaler) -> None:
        for part in self.parts.values():
            grad_scaler.unscale_(part)

    def step(self, grad_scaler: torch.amp.GradScaler) -> None:
        """Step every part through the scaler (which skips a step whose fp16 gradients overflowed)."""
        for part in self.parts.values():
            grad_scaler.step(part)

    def zero_grad(self) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        """Take a saved state once all of it is checked against these optimizers (NashError otherwise)."""
        if isinstance(state, dict) and "param_groups" in state:
            state = {"adamw": state}  # checkpoints before the optimizer choice saved AdamW's state alone
        saved = sorted(state) if isinstance(state, dict) else []
        if saved != sorted(self.parts):
            saved_name = "muon" if "muon" in saved else "adamw" if saved == ["adamw"] else "an unknown optimizer"
            raise NashError(
                f"it was saved by train.optimizer.name={saved_name} and this run uses {self.name}: resume with "
                f"--set train.optimizer.name={saved_name}, or start a new run from its weights with --init-from"
            )
        for name, part in self.parts.items():
            load_optimizer_state(part, state[name], name=f"{name} optimizer")


def set_learning_rate(optimizer: "torch.optim.Optimizer | Optimizers", lrs: Sequence[float]) -> None:
    """Give the param groups their learning rates, one per group in order."""
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, name: str = "optimizer") -> None:
    """optimizer.load_state_dict(state), once all of `state` is checked against `optimizer`.

    torch copies saved tensors as they are: a wrong-shaped exp_avg made a resume grow to 22 GB and
    crash the fused AdamW kernel. The check holds for any optimizer whose per-parameter state is
    buffers of the parameter's shape and dtype (exp_avg, momentum_buffer) and finite scalars (step).
    """
    problem = _optimizer_state_problem(optimizer, state)
    if problem is not None:
        raise NashError(f"the {name} state does not fit this model's {name} ({problem})")
    optimizer.load_state_dict(state)


def _optimizer_state_problem(optimizer: torch.optim.Optimizer, state: object) -> Optional[str]:
    fresh_groups = optimizer.state_dict()["param_groups"]  # params as the ids the saved state uses
    saved_groups = state.get("param_groups") if isinstance(state, dict) else None
    if not isinstance(saved_groups, list) or not isinstance(state.get("state"), dict):
        return "it needs a 'state' dict and a 'param_groups' list"
    if len(saved_groups) != len(fresh_groups):
        return f"{len(saved_groups)} parameter groups where the optimizer has {len(fresh_groups)}"
    group_of, parameters = {}, {}
    for index, (saved, fresh) in enumerate(zip(saved_groups, fresh_groups)):
        problem = _group_problem(saved, fresh)
        if problem is not None:
            return f"parameter group {index}: {problem}"
        for parameter_id, parameter in zip(fresh["params"], optimizer.param_groups[index]["params"]):
            group_of[parameter_id], parameters[parameter_id] = index, parameter
    names_in_group: dict[int, set] = {}  # the state names of each group's first parameter with state
    for parameter_id, parameter_state in state["state"].items():
        if not is_int(parameter_id) or parameter_id not in parameters:
            return f"state for parameter {parameter_id!r}, which the optimizer does not have"
        if not isinstance(parameter_state, dict) or not all(isinstance(name, str) for name in parameter_state):
            return f"the state of parameter {parameter_id} is not a dict of named values"
        names = names_in_group.setdefault(group_of[parameter_id], set(parameter_state))
        if set(parameter_state) != names:  # one parameter lacking a buffer its group has
            return f"parameter {parameter_id} has state {sorted(parameter_state)} where its group has {sorted(names)}"
        for name, value in parameter_state.items():
            problem = _state_value_problem(value, parameters[parameter_id])
            if problem is not None:
                return f"{name} of parameter {parameter_id} {problem}"
    return None


def _group_problem(saved: object, fresh: dict) -> Optional[str]:
    params = saved.get("params") if isinstance(saved, dict) else None
    if not isinstance(params, list) or not all(map(is_int, params)) or params != fresh["params"]:
        return "it lists other parameters than the optimizer's"
    for key, value in saved.items():
        if key != "params" and key in fresh and not _same_kind(value, fresh[key]):
            return f"{key} is a {type(value).__name__} of another kind than the optimizer's {fresh[key]!r}"
    return None


def _same_kind(value: object, reference: object) -> bool:
    """Whether a saved hyperparameter (lr, betas, fused, ...) can stand in for the fresh `reference`."""
    if reference is None or isinstance(reference, bool):
        return value is None or isinstance(value, bool)
    if isinstance(reference, (int, float)):
        return is_finite_number(value)
    if isinstance(reference, (tuple, list)):
        same_length = isinstance(value, (tuple, list)) and len(value) == len(reference)
        return same_length and all(map(_same_kind, value, reference))
    if isinstance(reference, torch.Tensor):  # lr as a tensor (capturable)
        return is_finite_number(value) or _state_value_problem(value, reference) is None
    return type(value) is type(reference)


def _state_value_problem(value: object, parameter: torch.Tensor) -> Optional[str]:
    """None if `value` is a buffer of the parameter's shape and dtype, or a scalar; all finite."""
    if not isinstance(value, torch.Tensor):
        return None if is_finite_number(value) else f"is {type(value).__name__}, not a number or tensor"
    if value.dim() != 0 and (value.shape != parameter.shape or value.dtype != parameter.dtype):
        return (
            f"is a {value.dtype} tensor of shape {list(value.shape)} where the parameter is "
            f"{parameter.dtype} of shape {list(parameter.shape)}"
        )
    if not bool(torch.isfinite(value).all()):
        return "holds NaN or infinite values"
    return None
