"""Training batches built ahead (on a GPU): the same batches, the same resume position, the same errors."""

import pytest
import torch

from nashcli.data.pretrain import PretrainBatches
from nashcli.engine.batches import PrefetchedBatches
from nashcli.errors import NashError


def batches(tiny_dataset) -> PretrainBatches:
    return PretrainBatches(tiny_dataset, "train", seq_len=16, batch_size=2, seed=0)


def test_batches_built_ahead_are_the_same_and_resume_where_they_were_handed_out(tiny_dataset):
    plain, ahead = batches(tiny_dataset), PrefetchedBatches(batches(tiny_dataset), depth=3)
    for _ in range(5):
        for expected, got in zip(plain.next_batch(), ahead.next_batch()):
            assert torch.equal(expected, got)
    assert ahead.state_dict() == plain.state_dict()  # not the position of the batches built ahead
    resumed = PrefetchedBatches(batches(tiny_dataset), depth=3)
    resumed.load_state_dict(ahead.state_dict())
    for expected, got in zip(plain.next_batch(), resumed.next_batch()):
        assert torch.equal(expected, got)
    ahead.close()
    resumed.close()


class FailingBatches:
    def __init__(self):
        self.made = 0

    def next_batch(self):
        self.made += 1
        if self.made == 3:
            raise NashError("shard train_000.bin holds token 60000")
        return torch.full((1, 2), self.made), torch.full((1, 2), self.made)

    def state_dict(self):
        return {"made": self.made}


def test_an_error_building_ahead_is_raised_by_the_call_that_reaches_it():
    ahead = PrefetchedBatches(FailingBatches(), depth=4)
    assert [int(ahead.next_batch()[0][0, 0]) for _ in range(2)] == [1, 2]
    with pytest.raises(NashError, match="token 60000"):
        ahead.next_batch()
