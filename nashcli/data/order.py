"""Which items (windows of tokens, SFT examples) each rank reads: a deterministic, resumable order.

The order is an endless stream of epochs; each epoch is a fresh permutation of range(N) drawn from
a generator seeded with (seed, epoch). A global batch takes the next `batch_size x world_size`
items of the stream and rank r keeps its own contiguous `batch_size` of them, so every rank reads
different items and the whole position is one integer: `items_consumed`. Resuming with another
world size still continues the same stream. Evaluation reads fixed items, split the same way.
"""

from typing import Iterator, Optional

import numpy as np

from nashcli.errors import NashError
from nashcli.value_checks import is_int

MAX_ITEMS_CONSUMED = 2**62  # stream positions are numpy int64s: a bigger one would overflow
# Evaluation items come from this fixed seed, not the run's: runs with different seeds are then
# compared on the same validation windows or examples.
EVAL_ORDER_SEED = 0


class EpochOrder:
    def __init__(self, num_items: int, seed: int):
        if num_items < 1:
            raise ValueError("EpochOrder needs at least one item")
        self.num_items = num_items
        self.seed = seed
        self.items_consumed = 0
        self._permutations: dict[int, np.ndarray] = {}

    def next_indices(self, batch_size: int, rank: int, world_size: int) -> np.ndarray:
        """Indices (batch_size,) of this rank's share of the next global batch; advances the stream."""
        start = self.items_consumed + rank * batch_size
        positions = np.arange(start, start + batch_size)
        self.items_consumed += batch_size * world_size
        return self._items_at(positions)

    def _items_at(self, positions: np.ndarray) -> np.ndarray:
        epochs, offsets = np.divmod(positions, self.num_items)
        indices = np.empty(len(positions), dtype=np.int64)
        for epoch in np.unique(epochs):
            chosen = epochs == epoch
            indices[chosen] = self._permutation(int(epoch))[offsets[chosen]]
        return indices

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            # Keep the current and the next epoch only: a batch spans at most two.
            self._permutations = {e: p for e, p in self._permutations.items() if e >= epoch - 1}
            generator = np.random.default_rng([self.seed, epoch])
            dtype = np.int32 if self.num_items < 2**31 else np.int64  # halves memory for 1e9-token datasets
            self._permutations[epoch] = generator.permutation(self.num_items).astype(dtype, copy=False)
        return self._permutations[epoch]

    def state_dict(self) -> dict:
        return {"items_consumed": self.items_consumed, "num_items": self.num_items, "seed": self.seed}

    def load_state_dict(self, state: Optional[dict]) -> None:
        """Continue from a saved position (read from a file: checked before use)."""
        keys = ("items_consumed", "num_items", "seed")
        if not isinstance(state, dict) or not all(is_int(state.get(key)) for key in keys):
            raise NashError(f"the data position must hold the integers {', '.join(keys)}")
        if state["num_items"] != self.num_items:
            raise NashError(
                f"the checkpoint's data position is for {state['num_items']:,} items (windows or examples); "
                f"this data has {self.num_items:,}: resume with the same data and model.max_seq_len"
            )
        if not (0 <= state["items_consumed"] <= MAX_ITEMS_CONSUMED and state["seed"] >= 0):
            raise NashError(
                f"the data position has items_consumed={state['items_consumed']} and seed={state['seed']}: "
                f"both must be >= 0, and items_consumed at most {MAX_ITEMS_CONSUMED}"
            )
        self.items_consumed = state["items_consumed"]
        self.seed = state["seed"]
        self._permutations = {}


class RankBatchOrder:
    """The item indices of this rank's batches, for training (resumable) and evaluation (fixed).

    What pretraining and SFT batches share; each turns the indices into tensors its own way.

    >>> order = RankBatchOrder(num_items=100, batch_size=4, seed=0, rank=1, world_size=2)
    >>> order.next_indices()   # (4,): positions 4..7 of the stream, the first global batch of 8
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self._epochs = EpochOrder(num_items, seed)

    def next_indices(self) -> np.ndarray:
        """Indices (batch_size,) of this rank's share of the next global training batch."""
        return self._epochs.next_indices(self.batch_size, self.rank, self.world_size)

    def eval_indices(self, num_batches: int) -> Iterator[np.ndarray]:
        """This rank's indices (batch_size,) of `num_batches` fixed global batches, the same every
        call whatever the training position; ranks get disjoint items unless the data is smaller
        than asked for (then items repeat)."""
        num_items, global_batch = self._epochs.num_items, self.batch_size * self.world_size
        permutation = np.random.default_rng([EVAL_ORDER_SEED]).permutation(num_items)
        indices = permutation[np.arange(num_batches * global_batch) % num_items]  # cycled if the data is short
        for batch_index in range(num_batches):
            start = batch_index * global_batch + self.rank * self.batch_size
            yield indices[start : start + self.batch_size]

    def state_dict(self) -> dict:
        return {"order": self._epochs.state_dict()}

    def load_state_dict(self, state: object) -> None:
        """Continue from `state["order"]` (read from a checkpoint: NashError unless it is valid)."""
        self._epochs.load_state_dict(state.get("order") if isinstance(state, dict) else None)
