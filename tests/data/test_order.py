import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch

from nashcli.data.order import RankBatchOrder
from nashcli.data.pretrain import PretrainBatches
from nashcli.data.sft import SFTBatches, SFTExample
from nashcli.engine.batches import Batches
from nashcli.errors import NashError

from .corpora import make_dataset


@dataclass
class BatchKind:
    """How to make one kind of batches over `num_items` items whose rows start with distinct tokens."""

    make: Callable[..., Batches]  # (batch_size, seed, rank=0, world_size=1) -> batches
    num_items: int
    state_extra: dict  # keys of its state_dict beside "order", as checkpoints already hold them


def pretrain_kind(tmp_path) -> BatchKind:
    folder = make_dataset(tmp_path / "d")  # token at position p is p: a window's first token names it

    def make(batch_size, seed, rank=0, world_size=1):
        return PretrainBatches(folder, "train", 16, batch_size, seed, rank=rank, world_size=world_size)

    return BatchKind(make, num_items=999 // 16 + 776 // 16 + 49 // 16, state_extra={"split": "train", "seq_len": 16})


def sft_kind(tmp_path) -> BatchKind:
    # Equal lengths, so no padding: the first token names the example.
    examples = [SFTExample(np.array([i, 1000 + i, 2000 + i, 50256]), num_prompt_tokens=1, line=i + 1) for i in range(37)]

    def make(batch_size, seed, rank=0, world_size=1):
        return SFTBatches(examples, batch_size, seed, rank=rank, world_size=world_size)

    return BatchKind(make, num_items=len(examples), state_extra={})


@pytest.fixture(params=[pretrain_kind, sft_kind], ids=["pretrain", "sft"])
def kind(request, tmp_path) -> BatchKind:
    return request.param(tmp_path)


def items(x: torch.Tensor) -> list[int]:
    return x[:, 0].tolist()


def test_both_batch_kinds_implement_the_batches_protocol(kind):
    assert isinstance(kind.make(2, seed=3), Batches)


def test_ranks_read_disjoint_shares_that_make_up_the_single_process_batch(kind):
    single = kind.make(6, seed=3)
    ranks = [kind.make(2, seed=3, rank=rank, world_size=3) for rank in range(3)]
    steps_per_epoch = kind.num_items // 6
    seen: list[int] = []
    for _ in range(steps_per_epoch + 2):  # across an epoch boundary
        shares = [items(rank.next_batch()[0]) for rank in ranks]
        assert sum(shares, []) == items(single.next_batch()[0])
        seen += sum(shares, [])
    first_epoch = seen[: steps_per_epoch * 6]
    assert len(set(first_epoch)) == len(first_epoch)


def test_eval_batches_are_fixed_and_split_across_ranks(kind):
    batches = kind.make(2, seed=1)
    first = [items(x) for x, _ in batches.eval_batches(3)]
    batches.next_batch()
    assert [items(x) for x, _ in batches.eval_batches(3)] == first
    assert [items(x) for x, _ in kind.make(2, seed=99).eval_batches(3)] == first  # whatever the run's seed
    ranks = [kind.make(1, seed=1, rank=rank, world_size=2) for rank in (0, 1)]
    shares = [[items(x) for x, _ in rank.eval_batches(3)] for rank in ranks]
    assert [a + b for a, b in zip(*shares)] == first
    assert len({item for batch in first for item in batch}) == 6


def test_state_round_trip_continues_the_stream_in_the_checkpoint_format(kind):
    batches = kind.make(4, seed=5)
    for _ in range(kind.num_items // 4 + 1):  # past an epoch boundary
        batches.next_batch()
    order = {"items_consumed": (kind.num_items // 4 + 1) * 4, "num_items": kind.num_items, "seed": 5}
    assert batches.state_dict() == {**kind.state_extra, "order": order}
    buffer = io.BytesIO()
    torch.save(batches.state_dict(), buffer)
    buffer.seek(0)
    resumed = kind.make(4, seed=0)  # the seed comes from the state
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(3):
        (x, y), (x2, y2) = batches.next_batch(), resumed.next_batch()
        assert torch.equal(x, x2) and torch.equal(y, y2)


@pytest.mark.parametrize(
    "state, message",
    [
        ({}, "the data position must hold the integers items_consumed, num_items, seed"),
        ([], "the data position must hold the integers"),
        ({"order": {"items_consumed": 0, "num_items": 3, "seed": True}}, "the data position must hold the integers"),
        ({"order": {"items_consumed": 0, "num_items": 3, "seed": 0}}, "is for 3 items .* this data has"),
    ],
    ids=["no-order", "not-a-dict", "bool-seed", "other-data"],
)
def test_a_bad_saved_position_is_one_line_error(kind, state, message):
    batches = kind.make(2, seed=0)
    before = batches.state_dict()
    with pytest.raises(NashError, match=message) as caught:
        batches.load_state_dict(state)
    assert "\n" not in str(caught.value)
    assert batches.state_dict() == before


def test_a_negative_position_is_refused():
    order = RankBatchOrder(num_items=10, batch_size=2, seed=0)
    with pytest.raises(NashError, match="items_consumed=-1 and seed=0: both must be >= 0"):
        order.load_state_dict({"order": {"items_consumed": -1, "num_items": 10, "seed": 0}})


def test_rank_outside_world_size_is_a_programming_error():
    with pytest.raises(ValueError, match="rank 2 is outside world size 2"):
        RankBatchOrder(num_items=10, batch_size=2, seed=0, rank=2, world_size=2)
