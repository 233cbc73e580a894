"""Random number generators of a process: seeding, and their state as plain tensors.

The states are stored as tensors and ints (not numpy arrays or tuples of objects), so that a
checkpoint holding them loads with torch.load(weights_only=True).
"""

import random

import numpy as np
import torch


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
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Put every generator back where `capture_rng_state` found it."""
    python_state = tuple(int(value) for value in state["python_state"].tolist())
    random.setstate((state["python_version"], python_state, state["python_gauss_next"]))
    numpy_keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", numpy_keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
