"""Training throughput: nash (`train()`, default precision and fp32) against Hugging Face
transformers' GPT2LMHeadModel + torch AdamW in fp32, on the same data and seed.

    python bench/train_throughput.py                      # shapes A and B, 3 rounds
    python bench/train_throughput.py --shapes C --rounds 2 --steps 3

The three sides alternate inside one process (the machine is noisy, see bench/README.md), each
round in a rotated order; tokens/s is the median step time of the measured steps after warm-up.
Peak memory comes from a separate, fresh process per side (a process's peak RSS only grows).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nashcli.config import NashConfig, resolve_config
from nashcli.data.prepare import prepare_dataset
from nashcli.data.pretrain import PretrainBatches
from nashcli.data.sources import resolve_source
from nashcli.engine.counters import peak_memory_mb
from nashcli.engine.reporter import SilentReporter
from nashcli.engine.trainer import train

# name: (n_layers, n_heads, d_model, seq_len, batch_size)
SHAPES = {
    "A": (4, 4, 256, 256, 8),  # the `small` preset
    "B": (6, 6, 384, 256, 8),
    "C": (12, 12, 768, 1024, 1),  # gpt2-124m at batch 1
}
SIDES = ("nash-default", "nash-fp32", "hf-fp32")
SEED = 1337


def nash_config(shape: str, precision: str, steps: int, dataset: Path, runs_dir: Path) -> NashConfig:
    n_layers, n_heads, d_model, seq_len, batch_size = SHAPES[shape]
    return resolve_config(
        None,
        [
            f"model.n_layers={n_layers}", f"model.n_heads={n_heads}", f"model.d_model={d_model}",
            f"model.d_ff={4 * d_model}", f"model.max_seq_len={seq_len}", "model.dropout=0",
            f"train.batch_size={batch_size}", f"train.max_steps={steps}", "train.warmup_steps=1",
            "train.lr=3e-4", "train.min_lr=3e-5", "train.eval_interval=0", "train.eval_batches=1",
            "train.checkpoint_interval=0", f"train.precision={precision}", f"train.seed={SEED}",
            f"data.dataset={dataset}", f"runs_dir={runs_dir}", f"name=bench-{shape}-{precision}-{time.time_ns()}",
            "metrics.log_interval=1000",
        ],
    )


class StepTimes(SilentReporter):
    """Wall time between consecutive optimizer steps (evaluation and checkpoints come only at the end)."""

    def __init__(self):
        self.times, self.precision = [], None

    def on_start(self, info):
        self.precision = info.precision
        self.times.append(time.perf_counter())

    def on_step(self, metrics):
        self.times.append(time.perf_counter())


def run_nash(shape: str, precision: str, steps: int, dataset: Path, runs_dir: Path) -> tuple[list[float], str]:
    """Step times of `train()`, and the precision it resolved."""
    reporter = StepTimes()
    train(nash_config(shape, precision, steps, dataset, runs_dir), reporter=reporter)
    return [b - a for a, b in zip(reporter.times, reporter.times[1:])], reporter.precision


def run_hf(shape: str, steps: int, dataset: Path) -> list[float]:
    """Step times of the reference: GPT2LMHeadModel (sdpa attention) + torch.optim.AdamW, fp32."""
    from transformers import GPT2Config, GPT2LMHeadModel

    n_layers, n_heads, d_model, seq_len, batch_size = SHAPES[shape]
    torch.manual_seed(SEED)
    config = GPT2Config(
        n_layer=n_layers, n_head=n_heads, n_embd=d_model, n_positions=seq_len, vocab_size=50257,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa",
    )
    model = GPT2LMHeadModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    batches = PretrainBatches(dataset, "train", seq_len=seq_len, batch_size=batch_size, seed=SEED)
    times = [time.perf_counter()]
    for _ in range(steps):
        inputs, targets = batches.next_batch()
        logits = model(inputs).logits  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter())
    return [b - a for a, b in zip(times, times[1:])]


def measure(side: str, shape: str, steps: int, dataset: Path, runs_dir: Path) -> tuple[list[float], str]:
    if side == "hf-fp32":
        return run_hf(shape, steps, dataset), "fp32"
    return run_nash(shape, "auto" if side == "nash-default" else "fp32", steps, dataset, runs_dir)


def peak_rss_mb(side: str, shape: str, dataset: Path) -> float:
    """Peak RSS of a fresh process that trains 3 steps of one side (torch's import included)."""
    command = [sys.executable, __file__, "--memory-of", side, "--shapes", shape, "--dataset", str(dataset)]
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def prepared_shakespeare(folder: Path) -> Path:
    out = folder / "shakespeare"
    prepare_dataset(resolve_source("shakespeare"), out, val_fraction=0.005)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="A,B", help="Comma-separated shapes among A, B, C.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="Steps per measurement; the first 2 are warm-up.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument("--dataset", type=Path, default=None, help="A prepared dataset (default: Shakespeare).")
    parser.add_argument("--memory-of", choices=SIDES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        dataset = args.dataset or prepared_shakespeare(scratch)
        if args.memory_of:
            measure(args.memory_of, args.shapes, 3, dataset, scratch / "runs")
            print(json.dumps({"peak_rss_mb": peak_memory_mb(torch.device("cpu"))}))
            return
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")
        for shape in args.shapes.split(","):
            report_shape(shape, args, dataset, scratch / "runs")


def report_shape(shape: str, args, dataset: Path, runs_dir: Path) -> None:
    _, _, _, seq_len, batch_size = SHAPES[shape]
    tokens_per_step = seq_len * batch_size
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    precision_of: dict[str, str] = {}
    for round_index in range(args.rounds):
        order = SIDES[round_index % 3 :] + SIDES[: round_index % 3]
        for side in order:
            step_times, precision_of[side] = measure(side, shape, args.steps, dataset, runs_dir)
            rate = tokens_per_step / statistics.median(step_times[2:])
            rates[side].append(rate)
            print(f"  shape {shape} round {round_index + 1} {side:13s} {rate:8.1f} tok/s", flush=True)
    print(f"\nshape {shape} {SHAPES[shape]} (layers, heads, width, seq, batch), median of {args.rounds} rounds:")
    print(f"{'side':14s} {'precision':9s} {'tok/s':>9s} {'ratio vs hf':>12s} {'peak RSS MB':>12s}")
    for side in SIDES:
        ratios = [mine / reference for mine, reference in zip(rates[side], rates["hf-fp32"])]
        memory = peak_rss_mb(side, shape, dataset) if not torch.cuda.is_available() else float("nan")
        print(
            f"{side:14s} {precision_of[side]:9s} {statistics.median(rates[side]):9.1f} "
            f"{statistics.median(ratios):11.2f}x {memory:12.0f}"
        )
    print()


if __name__ == "__main__":
    main()
