"""The batches a config trains and evaluates on: token shards for pretraining, or SFT examples.

Both kinds implement `Batches`, so the training loop and `nash eval` do not know which one they run.
"""

import copy
import queue
import threading
from dataclasses import dataclass, field
from typing import Iterator, Optional, Protocol, runtime_checkable

import torch

from nashcli.config import NashConfig
from nashcli.engine.distributed import DistributedContext
from nashcli.errors import NashError


@runtime_checkable
class Batches(Protocol):
    """This process's (inputs, targets) batches, int64 (batch_size, T): PretrainBatches or SFTBatches.

    Targets hold IGNORE_INDEX where no loss is taken. Each rank reads its own share of every global batch.
    """

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch; advances the position that state_dict() saves."""

    def eval_batches(self, num_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`num_batches` fixed batches: the same every call, whatever the training position."""

    def state_dict(self) -> dict:
        """The training position, as plain values for a checkpoint."""

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position; NashError, with one line, if it is not valid for this data."""


@dataclass
class RunBatches:
    train: Batches
    val: Batches  # the same kind, over the validation split: for eval_batches(n)
    description: str  # one line for the display, e.g. "shakespeare (301,966 train tokens)"
    notes: list[str] = field(default_factory=list)  # warnings about the data, one line each
    # SFT only: one training example as {"prompt", "completion"} text (the completion, with its
    # <|endoftext|>, is what carries loss) and the counts {"examples", "truncated", "skipped"}.
    sft_preview: Optional[dict] = None


def build_batches(config: NashConfig, context: DistributedContext) -> RunBatches:
    """Train and validation batches for this process (each rank reads its own part). On a GPU the
    training batches are built ahead, on a thread, in pinned memory (PrefetchedBatches)."""
    if config.is_sft:
        batches = _sft_batches(config, context)
    else:
        train = _pretrain_split(config, context, "train")
        val = _pretrain_split(config, context, "val")
        batches = RunBatches(train, val, f"{config.data.dataset} ({train.num_tokens:,} train tokens)")
    if context.device.type == "cuda":
        # Two steps' worth: the next step's micro-batches are ready while the GPU runs this one.
        batches.train = PrefetchedBatches(batches.train, depth=2 * config.train.grad_accum_steps, pin_memory=True)
    return batches


class PrefetchedBatches:
    """`source`'s training batches, built `depth` ahead on a background thread (and, for a GPU, in
    pinned memory, from which `.to(device, non_blocking=True)` is an asynchronous copy), so that the
    GPU does not wait while the host cuts the next batches from the shards.

    The same batches in the same order as `source`, and its errors, raised by the next_batch() call
    that reaches them. state_dict() is the position after the batches handed out, not after those
    built ahead, so a checkpoint resumes exactly. Implements `Batches`.
    """

    def __init__(self, source: Batches, depth: int = 2, pin_memory: bool = False):
        self.source, self.depth, self.pin_memory = source, max(1, depth), pin_memory
        self._queue: Optional[queue.Queue] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._position: Optional[dict] = None  # source's state after the last batch handed out

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        batch, self._position = item
        return batch

    def eval_batches(self, num_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.source.eval_batches(num_batches)  # fixed batches, independent of the position

    def state_dict(self) -> dict:
        return copy.deepcopy(self._position) if self._position is not None else self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.close()  # the batches built ahead belong to the old position
        self.source.load_state_dict(state)
        self._position = None

    def close(self) -> None:
        """Stop building ahead (the thread also ends by itself with the program)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread, self._queue = None, None
            self._stop = threading.Event()

    def _start(self) -> None:
        self._position = self.source.state_dict()
        self._queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(
            target=self._build_ahead, args=(self._queue, self._stop), name="nash-batches", daemon=True
        )
        self._thread.start()

    def _build_ahead(self, ready: queue.Queue, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                inputs, targets = self.source.next_batch()
                if self.pin_memory:
                    inputs, targets = inputs.pin_memory(), targets.pin_memory()
                item = ((inputs, targets), copy.deepcopy(self.source.state_dict()))
                if not _put_unless_stopped(ready, item, stop):
                    return
        except BaseException as error:  # handed to the consumer, raised where it asks for the batch
            _put_unless_stopped(ready, error, stop)


def _put_unless_stopped(ready: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put `item` once there is room; False if `stop` was set (or the program is ending) first."""
    while not stop.is_set() and threading.main_thread().is_alive():
        try:
            ready.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def build_split_batches(config: NashConfig, context: DistributedContext, split: str) -> tuple[Batches, str]:
    """One split's batches and a one-line description, for `nash eval`: a prepared dataset opens, and
    checksums, only that split's shards (a train split can be hundreds of times the val split)."""
    if config.is_sft:
        batches = _sft_batches(config, context)  # both splits come from the same file(s)
        return getattr(batches, split), batches.description
    batches = _pretrain_split(config, context, split)
    return batches, f"{config.data.dataset} ({batches.num_tokens:,} tokens)"


def _pretrain_split(config: NashConfig, context: DistributedContext, split: str):
    if config.data.dataset is None:
        raise NashError(
            "no training data: set data.dataset to a prepared dataset (e.g. `nash prepare shakespeare`, then "
            "--set data.dataset=shakespeare) or data.sft_file to an SFT .jsonl file"
        )
    from nashcli.data.pretrain import PretrainBatches, resolve_dataset_dir

    return PretrainBatches(
        resolve_dataset_dir(config.data.dataset, config.data.data_dir),
        split,
        seq_len=config.model.max_seq_len,
        batch_size=config.train.batch_size,
        seed=config.train.seed,
        rank=context.rank,
        world_size=context.world_size,
        vocab_size=config.model.vocab_size,
    )


def _sft_batches(config: NashConfig, context: DistributedContext) -> RunBatches:
    from nashcli.data.sft import SFTBatches, load_sft_examples, split_sft_examples
    from nashcli.data.tokenizer import get_tokenizer

    tokenizer = get_tokenizer()
    seq_len, data = config.model.max_seq_len, config.data
    examples, stats = load_sft_examples(data.sft_file, tokenizer, seq_len)
    notes = list(stats.warnings)
    if data.sft_val_file is not None:
        train_examples = examples
        val_examples, val_stats = load_sft_examples(data.sft_val_file, tokenizer, seq_len)
        notes += val_stats.warnings
    else:
        train_examples, val_examples = split_sft_examples(examples, data.sft_val_fraction, config.train.seed)
    common = dict(
        batch_size=config.train.batch_size,
        seed=config.train.seed,
        rank=context.rank,
        world_size=context.world_size,
        pad_token=tokenizer.eot_token,
    )
    description = (
        f"{data.sft_file} ({len(train_examples):,} train / {len(val_examples):,} val examples; "
        f"{stats.completion_tokens:,} trained and {stats.prompt_tokens:,} prompt tokens)"
    )
    example = train_examples[0]
    preview = {
        "prompt": tokenizer.decode(example.tokens[: example.num_prompt_tokens].tolist()),
        "completion": tokenizer.decode(example.tokens[example.num_prompt_tokens :].tolist()),
        "examples": stats.examples,
        "truncated": stats.truncated,
        "skipped": stats.skipped,
    }
    train, val = SFTBatches(train_examples, **common), SFTBatches(val_examples, **common)
    return RunBatches(train, val, description, notes, preview)
