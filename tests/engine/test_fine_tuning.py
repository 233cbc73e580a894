"""Fine-tuning through the same loop: SFT batches from a .jsonl file, weights from a run or hf:."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nashcli.data.pretrain import PretrainBatches
from nashcli.data.sft import SFTBatches, load_sft_examples, split_sft_examples
from nashcli.data.tokenizer import get_tokenizer
from nashcli.engine.loading import load_model
from nashcli.engine.reporter import SilentReporter
from nashcli.engine.trainer import train
from nashcli.model.loss import IGNORE_INDEX
from nashcli.runs.metrics import read_metrics


class FirstSteps(SilentReporter):
    def __init__(self):
        self.steps = []

    def on_step(self, metrics):
        self.steps.append(metrics)


def write_sft_file(path: Path) -> Path:
    pairs = [(f"Q: what is {a} plus {b}?\nA:", f" {a + b}.") for a in range(4) for b in range(5)]
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in pairs))
    return path


def test_sft_from_a_pretrained_run_starts_at_its_loss_on_completion_tokens_only(tiny_config):
    train(tiny_config("name=base", "train.max_steps=2"))
    sft_file = write_sft_file(Path("sft.jsonl"))
    overrides = ["name=sft", "data.dataset=null", f"data.sft_file={sft_file}", "init_from=runs/base"]
    reporter = FirstSteps()
    train(tiny_config(*overrides, "train.max_steps=2", "train.eval_interval=1"), reporter=reporter)

    # The first step's loss is the pretrained model's mean loss over the completion targets of the
    # same first batch: the weights were loaded, and prompt and padding targets carry no loss.
    examples, _ = load_sft_examples(sft_file, get_tokenizer(), max_seq_len=16)
    train_examples, val_examples = split_sft_examples(examples, 0.05, seed=1337)
    inputs, targets = SFTBatches(train_examples, batch_size=4, seed=1337).next_batch()
    pretrained, _ = load_model("runs/base", "best", device="cpu")
    with torch.no_grad():
        logits = pretrained(inputs)  # (B, T, V)
    kept = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[kept], targets[kept]).item()
    assert 0 < kept.sum() < targets.numel()
    assert reporter.steps[0].train_loss == pytest.approx(expected, abs=1e-5)
    # Evaluation counts the completion targets of its 2 fixed batches of 4, not their padded size.
    val_batches = list(SFTBatches(val_examples, batch_size=4, seed=1337).eval_batches(2))
    val_targets = sum(int((targets != IGNORE_INDEX).sum()) for _, targets in val_batches)
    assert 0 < val_targets < sum(targets.numel() for _, targets in val_batches)
    evals = [r for r in read_metrics(Path("runs/sft/metrics.jsonl")) if "val_loss" in r]
    assert [(r["step"], r["val_tokens"]) for r in evals] == [(1, val_targets), (2, val_targets)]


def test_init_from_hf_weights_takes_their_shape_and_values(tiny_config, tiny_dataset, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=50257)
    torch.manual_seed(0)
    hf_model = transformers.GPT2LMHeadModel(hf_config).eval()
    hf_model.save_pretrained(tmp_path / "hf-tiny")
    reporter = FirstSteps()
    source = f"hf:{tmp_path / 'hf-tiny'}"
    summary = train(
        tiny_config("name=from-hf", f"init_from={source}", "model.dropout=0", "train.max_steps=2"), reporter=reporter
    )
    config = load_model("runs/from-hf", "last", device="cpu")[1]
    assert (config.model.n_layers, config.model.d_model, config.init_from) == (1, 16, source)
    assert summary.parameters == sum(p.numel() for p in hf_model.parameters())
    inputs, targets = PretrainBatches(tiny_dataset, "train", seq_len=16, batch_size=4, seed=1337).next_batch()
    with torch.no_grad():
        expected = F.cross_entropy(hf_model(inputs).logits.flatten(0, 1), targets.flatten()).item()
    assert reporter.steps[0].train_loss == pytest.approx(expected, abs=1e-4)


def test_the_sft_loss_reads_no_prompt_target(tmp_path):
    """Prompt targets may hold anything: only completion targets (and the closing EOT) reach the loss."""
    from nashcli.config.models import ModelConfig
    from nashcli.model.gpt import GPT

    torch.manual_seed(0)
    examples, _ = load_sft_examples(write_sft_file(tmp_path / "sft.jsonl"), get_tokenizer(), max_seq_len=32)
    x, y = SFTBatches(examples[:4], batch_size=4, seed=0).next_batch()  # (4, T)
    model = GPT(ModelConfig(n_layers=1, n_heads=2, d_model=32, d_ff=64, max_seq_len=32)).eval()
    trained = y != IGNORE_INDEX
    # The real next tokens at every position, and a copy whose prompt targets are scrambled.
    next_tokens = torch.cat([x[:, 1:], torch.full_like(x[:, :1], 50256)], dim=1)
    next_tokens[trained] = y[trained]
    scrambled = torch.where(trained, next_tokens, torch.randint_like(next_tokens, 50257))
    with torch.no_grad():
        loss = model(x, y)
        with_scrambled_prompts = model(x, torch.where(trained, scrambled, IGNORE_INDEX))
        with_every_target = model(x, next_tokens)
    assert torch.equal(loss, with_scrambled_prompts)
    assert not torch.allclose(loss, with_every_target)  # the prompt targets would have counted
    prompt_lengths = [example.num_prompt_tokens for example in examples[:4]]
    for row, prompt_length in enumerate(prompt_lengths):
        assert not trained[row, : prompt_length - 1].any()  # no prompt token is ever a target


def test_a_dataset_with_no_trainable_example_is_refused(tmp_path):
    from nashcli.errors import NashError

    path = tmp_path / "too_long.jsonl"
    path.write_text(json.dumps({"prompt": "Q:", "completion": " word" * 50}) + "\n")
    with pytest.raises(NashError, match="no example fits model.max_seq_len=16"):
        load_sft_examples(path, get_tokenizer(), max_seq_len=16)
