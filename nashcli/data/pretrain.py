"""Pretraining batches read back from token shards, memory-mapped, in a resumable order.

Each shard is cut into non-overlapping windows of `seq_len + 1` tokens that start every `seq_len`
tokens, so every next-token pair of a shard is a target exactly once per epoch and no window runs
past the end of its shard. Shards are memory-mapped: the OS pages in only the windows that are read.
"""

from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from nashcli.data.order import RankBatchOrder
from nashcli.data.dataset_meta import META_FILE, DatasetMeta, is_prepared
from nashcli.data.shards import open_shard
from nashcli.data.sources import REGISTRY
from nashcli.errors import NashError


def resolve_dataset_dir(dataset: str, data_dir: Path) -> Path:
    """The folder of a prepared dataset: `dataset` as a folder path, or a name under `data_dir`.

    NashError naming what is prepared and the `nash prepare` command that makes it when missing.
    """
    for candidate in (Path(dataset).expanduser(), data_dir / dataset):
        if is_prepared(candidate):
            return candidate
    for candidate in (Path(dataset).expanduser(), data_dir / dataset):
        if candidate.is_dir():
            raise NashError(f"{candidate} is not a prepared dataset (no meta.json): run `nash prepare SOURCE --out {candidate}`")
    prepared = sorted(folder.name for folder in data_dir.glob("*") if is_prepared(folder)) if data_dir.is_dir() else []
    have = f"prepared: {', '.join(prepared)}" if prepared else "none prepared yet"
    fix = f"nash prepare {dataset}" if dataset in REGISTRY else f"nash prepare PATH --out {data_dir / dataset}"
    raise NashError(f"no prepared dataset '{dataset}' in {data_dir}/ ({have}): run `{fix}`")


class PretrainBatches:
    """(x, y) batches of `seq_len` tokens from one split; y is x shifted by one token.

    >>> batches = PretrainBatches(Path("data/shakespeare"), "train", seq_len=128, batch_size=8, seed=0)
    >>> x, y = batches.next_batch()   # both (8, 128) int64
    """

    def __init__(
        self,
        dataset_dir: Path,
        split: str,
        seq_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        vocab_size: Optional[int] = None,
    ):
        meta = DatasetMeta.read(dataset_dir)
        if vocab_size is not None and meta.max_token_id >= vocab_size:
            raise NashError(
                f"dataset {dataset_dir} holds token ids up to {meta.max_token_id} ({meta.tokenizer} tokenizer), but "
                f"model.vocab_size is {vocab_size}: set model.vocab_size to at least {meta.max_token_id + 1}"
            )
        info = meta.splits.get(split)
        if info is None or not info.shards:
            have = ", ".join(name for name, split_info in meta.splits.items() if split_info.shards) or "none"
            raise NashError(
                f"dataset {dataset_dir} has no '{split}' split (splits with data: {have}): "
                "re-run `nash prepare` with --force (and --val-fraction > 0 for a val split)"
            )
        self.split = split
        self.seq_len = seq_len
        self._shard_paths = [dataset_dir / shard.file for shard in info.shards]
        self._shards = [open_shard(path, shard) for path, shard in zip(self._shard_paths, info.shards)]
        # Every batch is checked against this bound (meta.json's vocab_size and the model's are above
        # it): a shard whose meta.json lies must not reach the embedding as an out-of-range index.
        self._max_token_id = meta.max_token_id
        self._meta_path = dataset_dir / META_FILE
        self.num_tokens: int = sum(len(shard) for shard in self._shards)
        windows_per_shard = [max(0, (len(shard) - 1) // seq_len) for shard in self._shards]
        # _first_window[s] is the global index of shard s's first window; the last entry is the total.
        self._first_window = np.concatenate([[0], np.cumsum(windows_per_shard)]).astype(np.int64)
        self.num_windows = int(self._first_window[-1])
        if self.num_windows == 0:
            raise NashError(
                f"the '{split}' split of {dataset_dir} has {self.num_tokens:,} tokens, fewer than one sequence of "
                f"{seq_len + 1} (model.max_seq_len + 1) in any shard: lower model.max_seq_len or prepare more data"
            )
        self._order = RankBatchOrder(self.num_windows, batch_size, seed, rank, world_size)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch of this rank: x, y int64 (batch_size, seq_len)."""
        return self._batch(self._order.next_indices())

    def eval_batches(self, num_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`num_batches` fixed batches (the same every call, whatever the training position);
        ranks get disjoint windows. Windows repeat only when the split is smaller than asked for."""
        return map(self._batch, self._order.eval_indices(num_batches))

    def state_dict(self) -> dict:
        # split and seq_len say what the position is in, for a reader; loading checks the window count.
        return {"split": self.split, "seq_len": self.seq_len, **self._order.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._order.load_state_dict(state)

    def _batch(self, window_indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.stack([self._window(int(index)) for index in window_indices])  # (B, T+1) uint16
        if rows.max() > self._max_token_id:  # one pass over B x T tokens: cheap next to the step
            raise self._token_id_error(window_indices)
        tokens = torch.from_numpy(rows.astype(np.int64))
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # (B, T), (B, T)

    def _shard_of(self, index: int) -> int:
        return int(np.searchsorted(self._first_window, index, side="right")) - 1

    def _window(self, index: int) -> np.ndarray:
        shard = self._shard_of(index)
        start = (index - int(self._first_window[shard])) * self.seq_len
        return self._shards[shard][start : start + self.seq_len + 1]  # (T+1,)

    def _token_id_error(self, window_indices: np.ndarray) -> NashError:
        """The error naming the first shard of the batch with a token id above max_token_id."""
        index = next(int(index) for index in window_indices if self._window(int(index)).max() > self._max_token_id)
        return NashError(
            f"{self._shard_paths[self._shard_of(index)]} holds token id {int(self._window(index).max())}, above "
            f"max_token_id {self._max_token_id} in {self._meta_path}, so the dataset is damaged: re-run "
            "`nash prepare` with --force"
        )
