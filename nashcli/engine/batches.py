"""The batches a config trains and evaluates on: token shards for pretraining, or SFT examples.

Both kinds have the same interface (next_batch, eval_batches, state_dict, load_state_dict), so the
training loop does not know which one it runs.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from nashcli.config import NashConfig
from nashcli.engine.distributed import DistributedContext
from nashcli.errors import NashError


@dataclass
class RunBatches:
    train: Any  # PretrainBatches or SFTBatches: next_batch(), state_dict(), load_state_dict()
    val: Any  # the same kind, over the validation split: eval_batches(n)
    description: str  # one line for the display, e.g. "shakespeare (301,966 train tokens)"
    notes: list[str] = field(default_factory=list)  # warnings about the data, one line each
    # SFT only: one training example as {"prompt", "completion"} text (the completion, with its
    # <|endoftext|>, is what carries loss) and the counts {"examples", "truncated", "skipped"}.
    sft_preview: Optional[dict] = None


def build_batches(config: NashConfig, context: DistributedContext) -> RunBatches:
    """Train and validation batches for this process (each rank reads its own part)."""
    if config.is_sft:
        return _sft_batches(config, context)
    if config.data.dataset is None:
        raise NashError(
            "no training data: set data.dataset to a prepared dataset (e.g. `nash prepare shakespeare`, then "
            "--set data.dataset=shakespeare) or data.sft_file to an SFT .jsonl file"
        )
    from nashcli.data.pretrain import PretrainBatches, resolve_dataset_dir

    dataset_dir = resolve_dataset_dir(config.data.dataset, config.data.data_dir)
    common = dict(
        seq_len=config.model.max_seq_len,
        batch_size=config.train.batch_size,
        seed=config.train.seed,
        rank=context.rank,
        world_size=context.world_size,
        vocab_size=config.model.vocab_size,
    )
    train = PretrainBatches(dataset_dir, "train", **common)
    val = PretrainBatches(dataset_dir, "val", **common)
    return RunBatches(train, val, f"{config.data.dataset} ({train.num_tokens:,} train tokens)")


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
