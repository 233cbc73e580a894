"""Random number generators of a process: seeding, and their state as plain tensors.

The states are stored as tensors and ints (not numpy arrays or tuples of objects), so that a
checkpoint holding them loads with torch.load(weights_only=True).
"""

import random
from typing import Optional

import numpy as np
import torch

from nashcli.errors import NashError
from nashcli.value_checks import is_int

MT_WORDS = 624  # the Mersenne Twister state of python's and numpy's generators, in 32-bit words


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict:
    """The state of every generator training draws from (dropout, data shuffles, python/numpy)."""
    version, python_state, gauss_next = random.getstate()
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    state = {
        "python_version": version,
        "python_state": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss_next": gauss_next,
        "numpy_keys": torch.from_numpy(numpy_keys.astype(np.int64)),
        "numpy_pos": int(numpy_pos),
        "numpy_has_gauss": int(numpy_has_gauss),
        "numpy_gauss": float(numpy_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # This process's own GPU only (the current device, which setup_distributed selects): a resume
        # may see fewer or more GPUs, and the other GPUs belong to other processes.
        state["cuda_device"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    """Put every generator back where `capture_rng_state` found it. The state comes from a file:
    NashError, before any generator changes, unless it is what capture_rng_state gives."""
    problem = _rng_state_problem(state)
    if problem is not None:
        raise NashError(f"the random number generator state is damaged: {problem}")
    try:  # first: torch checks the values of its states itself
        torch.set_rng_state(state["torch"])
        own_cuda_state = _own_cuda_state(state)
        if own_cuda_state is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(own_cuda_state)  # the current device
    except RuntimeError as error:
        raise NashError(f"the random number generator state is damaged: torch refused it ({error})") from None
    python_state = tuple(int(value) for value in state["python_state"].tolist())
    random.setstate((state["python_version"], python_state, state["python_gauss_next"]))
    numpy_keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", numpy_keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"])
    )


def _rng_state_problem(state: object) -> Optional[str]:
    if not isinstance(state, dict):
        return "not a dict"
    is_valid = {
        "python_version": lambda value: is_int(value) and value == random.getstate()[0],
        # 624 words and the position in them
        "python_state": lambda value: _is_words(value, MT_WORDS + 1) and int(value[-1]) <= MT_WORDS,
        "python_gauss_next": lambda value: value is None or isinstance(value, float),
        "numpy_keys": lambda value: _is_words(value, MT_WORDS),
        "numpy_pos": lambda value: is_int(value) and 0 <= value <= MT_WORDS,
        "numpy_has_gauss": lambda value: is_int(value) and value in (0, 1),
        "numpy_gauss": lambda value: isinstance(value, float),
        "torch": lambda value: _is_bytes(value) and value.shape == torch.get_rng_state().shape,
    }
    for key, valid in is_valid.items():
        if key not in state or not valid(state[key]):
            return f"{key} is missing or malformed"
    cuda = state.get("cuda", [])
    if not isinstance(cuda, list) or not all(_is_bytes(device_state) for device_state in cuda):
        return "cuda is not a list of byte tensors"
    if "cuda_device" in state and not _is_bytes(state["cuda_device"]):
        return "cuda_device is not a byte tensor"
    return None


def _own_cuda_state(state: dict) -> Optional[torch.Tensor]:
    """The saved CUDA generator of this process's device. Earlier checkpoints saved every visible
    GPU's, as the list `cuda`: from those, the current device's entry, if there is one."""
    if "cuda_device" in state:
        return state["cuda_device"]
    every_gpu = state.get("cuda", [])
    if not every_gpu or not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    return every_gpu[index] if index < len(every_gpu) else None


def _is_words(value: object, count: int) -> bool:
    """A (count,) int64 tensor of 32-bit unsigned words."""
    return (
        isinstance(value, torch.Tensor)
        and value.dtype == torch.int64
        and tuple(value.shape) == (count,)
        and bool(((value >= 0) & (value < 2**32)).all())
    )


def _is_bytes(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1
