"""The RNG states a checkpoint keeps: every generator of the process, and of CUDA only its own GPU."""

import pytest
import torch

from nashcli.engine import rng
from nashcli.engine.rng import capture_rng_state, restore_rng_state
from nashcli.errors import NashError


class FakeCuda:
    """torch.cuda on a machine with `count` GPUs where this process uses `current`: one RNG state per GPU."""

    def __init__(self, monkeypatch, count: int, current: int):
        self.states = {index: torch.full((16,), index, dtype=torch.uint8) for index in range(count)}
        self.current, self.count = current, count
        for name, value in {
            "is_available": lambda: True,
            "is_initialized": lambda: True,
            "device_count": lambda: self.count,
            "current_device": lambda: self.current,
            "get_rng_state": self.get_rng_state,
            "set_rng_state": self.set_rng_state,
            "get_rng_state_all": lambda: [self.states[index] for index in range(self.count)],
        }.items():
            monkeypatch.setattr(rng.torch.cuda, name, value)

    def get_rng_state(self, device="cuda"):
        return self.states[self.current].clone()

    def set_rng_state(self, state, device="cuda"):
        self.states[self.current] = state.clone()


def test_only_the_own_gpus_state_is_saved_and_restored(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=4, current=2)
    state = capture_rng_state()
    assert "cuda" not in state and torch.equal(state["cuda_device"], torch.full((16,), 2, dtype=torch.uint8))
    cuda.states[2] = torch.zeros(16, dtype=torch.uint8)
    restore_rng_state(state)
    assert torch.equal(cuda.states[2], torch.full((16,), 2, dtype=torch.uint8))
    assert all(torch.equal(cuda.states[index], torch.full((16,), index, dtype=torch.uint8)) for index in (0, 1, 3))


def test_a_resume_that_sees_fewer_gpus_restores_without_error(monkeypatch):
    FakeCuda(monkeypatch, count=8, current=5)
    saved = capture_rng_state()
    cuda = FakeCuda(monkeypatch, count=1, current=0)  # the same process's GPU, now the only one visible
    restore_rng_state(saved)
    assert torch.equal(cuda.states[0], torch.full((16,), 5, dtype=torch.uint8))


def test_checkpoints_with_every_gpus_state_still_load(monkeypatch):
    """Earlier checkpoints kept the list of every visible GPU's state: the current device's is taken,
    and a list shorter than that device's index (fewer GPUs then) restores the CPU generators only."""
    cuda = FakeCuda(monkeypatch, count=3, current=1)
    old_format = capture_rng_state()
    old_format.pop("cuda_device")
    old_format["cuda"] = [torch.full((16,), 10 + index, dtype=torch.uint8) for index in range(3)]
    restore_rng_state(old_format)
    assert torch.equal(cuda.states[1], torch.full((16,), 11, dtype=torch.uint8))
    cuda.current = 2
    restore_rng_state({**old_format, "cuda": old_format["cuda"][:2]})  # no IndexError
    assert torch.equal(cuda.states[2], torch.full((16,), 2, dtype=torch.uint8))


def test_a_malformed_own_gpu_state_is_one_error():
    state = capture_rng_state()
    with pytest.raises(NashError, match="cuda_device is not a byte tensor"):
        restore_rng_state({**state, "cuda_device": [1, 2]})
