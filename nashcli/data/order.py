"""A deterministic, resumable, rank-split order over N items (windows of tokens, SFT examples).

The order is an endless stream of epochs; each epoch is a fresh permutation of range(N) drawn from
a generator seeded with (seed, epoch). A global batch takes the next `batch_size x world_size`
items of the stream and rank r keeps its own contiguous `batch_size` of them, so every rank reads
different items and the whole position is one integer: `items_consumed`. Resuming with another
world size still continues the same stream.
"""

from typing import Optional

import numpy as np

from nashcli.errors import NashError
from nashcli.value_checks import is_int

MAX_ITEMS_CONSUMED = 2**62  # stream positions are numpy int64s: a bigger one would overflow


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


def fixed_indices(num_items: int, count: int, seed: int) -> np.ndarray:
    """`count` indices drawn once from a fixed permutation (cycled when count > num_items)."""
    permutation = np.random.default_rng([seed]).permutation(num_items)
    return permutation[np.arange(count) % num_items]
