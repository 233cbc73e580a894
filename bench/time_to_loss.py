"""Time to loss: how much training time a candidate recipe needs to reach the GPT-2 recipe's val loss.

    python bench/time_to_loss.py                                 # tiny and small, modern vs gpt2, 2 seeds
    python bench/time_to_loss.py --shapes tiny --options         # + every option on its own, 1 seed
    python bench/time_to_loss.py --shapes tiny --candidate "train.optimizer.name=muon"

On the built-in Shakespeare corpus, with the same data order and seeds on both sides, the reference
(the `tiny` or `small` preset: GPT-2's recipe) trains for a fixed number of steps and its final val
loss is the target. The candidate (the `modern-tiny` / `modern-small` preset, or one option added to
the reference) trains for `--fraction` of those steps, with its schedule fitted to that shorter run,
and the script reports the first evaluation at which it reached the target: its tokens and its
training wall time (step time only; the evaluations, identical on both sides, are not counted).

Sides alternate within each seed (reference first for even seeds), since the machine is noisy
(bench/README.md). Wall-time ratios compare runs of the same process and machine only.
"""

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nashcli.config import resolve_config
from nashcli.data.prepare import prepare_dataset
from nashcli.data.sources import resolve_source
from nashcli.engine.reporter import SilentReporter
from nashcli.engine.trainer import train

SHAPES = {"tiny": ("tiny", "modern-tiny"), "small": ("small", "modern-small")}
# Each option of the modern recipe on its own, added to the GPT-2 recipe (same lr unless the option needs its own).
OPTIONS = {
    "rope": ["model.positions=rope"],
    "rmsnorm": ["model.norm=rmsnorm"],
    "relu2": ["model.activation=relu2"],
    "qk_norm": ["model.qk_norm=true"],
    "untied head": ["model.tie_embeddings=false"],
    "no bias": ["model.bias=false"],
    "zero-init output": ["model.zero_init_output=true"],
    "wsd schedule": ["train.schedule=wsd"],
    "muon": ["train.optimizer.name=muon"],
}


class TrainingClock(SilentReporter):
    """Training time at every evaluation: the time of the optimizer steps only (evaluations and
    checkpoints happen between steps and are left out), and the val loss."""

    def __init__(self):
        self.train_s, self.last = 0.0, 0.0
        self.evals: list[tuple[int, int, float, float]] = []  # (step, tokens, train_s, val_loss)
        self.tokens = 0

    def on_start(self, info):
        self.last = time.perf_counter()

    def on_step(self, metrics):
        now = time.perf_counter()
        self.train_s += now - self.last
        self.last, self.tokens = now, metrics.tokens

    def on_eval(self, metrics):
        self.evals.append((metrics.step, self.tokens, self.train_s, metrics.val_loss))
        self.last = time.perf_counter()

    def on_checkpoint(self, path):
        self.last = time.perf_counter()


@dataclass
class Outcome:
    final_loss: float
    train_s: float
    tokens_per_s: float
    reached: "tuple[int, int, float] | None"  # (step, tokens, train_s) of the first eval at or below the target


def run(preset: str, extra: list[str], steps: int, eval_every: int, seed: int, dataset: Path, runs_dir: Path):
    settings = [
        f"train.max_steps={steps}", f"train.eval_interval={eval_every}", "train.eval_batches=40",
        "train.checkpoint_interval=0", "train.precision=fp32", f"train.seed={seed}", "metrics.log_interval=100000",
        f"data.dataset={dataset}", f"runs_dir={runs_dir}", f"name={preset}-{time.time_ns()}", *extra,
    ]
    config = resolve_config(preset, settings)
    if config.train.warmup_steps > steps // 4:  # short runs keep a proportionate warmup
        config = resolve_config(preset, [*settings, f"train.warmup_steps={steps // 4}"])
    clock = TrainingClock()
    train(config, reporter=clock)
    return clock


def outcome(clock: TrainingClock, target: "float | None") -> Outcome:
    reached = None
    if target is not None:
        reached = next(((s, t, w) for s, t, w, loss in clock.evals if loss <= target), None)
    return Outcome(clock.evals[-1][3], clock.train_s, clock.tokens / clock.train_s, reached)


def compare(name: str, reference: tuple[str, list[str]], candidate: tuple[str, list[str]], args, dataset, runs_dir):
    """Reference for args.steps, candidate for args.fraction of them; one line per seed, then medians."""
    candidate_steps = max(1, round(args.steps * args.fraction))
    rows = []
    for seed_index in range(args.seeds):
        seed = 1337 + seed_index
        order = ["reference", "candidate"] if seed_index % 2 == 0 else ["candidate", "reference"]
        clocks = {}
        for side in order:
            preset, extra = reference if side == "reference" else candidate
            side_steps = args.steps if side == "reference" else candidate_steps
            clocks[side] = run(preset, extra, side_steps, args.eval_every, seed, dataset, runs_dir)
        ref = outcome(clocks["reference"], None)
        cand = outcome(clocks["candidate"], ref.final_loss)
        rows.append((ref, cand))
        got = (
            f"reached it at step {cand.reached[0]}: {cand.reached[1] / clocks['reference'].tokens:.2f}x the tokens, "
            f"{cand.reached[2] / ref.train_s:.2f}x the time"
            if cand.reached else f"did not reach it (final {cand.final_loss:.3f})"
        )
        print(
            f"  {name:18s} seed {seed}: reference {ref.final_loss:.3f} in {ref.train_s:5.0f} s "
            f"({ref.tokens_per_s:5.0f} tok/s); candidate {cand.tokens_per_s:5.0f} tok/s, {got}",
            flush=True,
        )
    time_ratios = [c.reached[2] / r.train_s if c.reached else float("inf") for r, c in rows]
    token_ratios = [c.reached[1] / (r.tokens_per_s * r.train_s) if c.reached else float("inf") for r, c in rows]
    speed = statistics.median(c.tokens_per_s / r.tokens_per_s for r, c in rows)
    loss_gap = statistics.median(c.final_loss - r.final_loss for r, c in rows)
    return name, statistics.median(token_ratios), statistics.median(time_ratios), speed, loss_gap


def print_table(title: str, results: list) -> None:
    print(f"\n{title}")
    print(f"| {'candidate':18s} | tokens to target | time to target | tok/s ratio | final loss - reference |")
    print("|---|---:|---:|---:|---:|")
    for name, tokens, wall, speed, gap in results:
        fmt = lambda ratio: f"{ratio:.2f}x" if ratio != float("inf") else "not reached"  # noqa: E731
        print(f"| {name:18s} | {fmt(tokens)} | {fmt(wall)} | {speed:.2f}x | {gap:+.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tiny,small", help="Comma-separated: tiny, small.")
    parser.add_argument("--steps", type=int, default=None, help="Reference steps (default: 400 tiny, 150 small).")
    parser.add_argument("--fraction", type=float, default=0.5, help="Candidate steps as a fraction of the reference's.")
    parser.add_argument("--eval-every", type=int, default=None, help="Steps between evaluations (default: steps / 20).")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--options", action="store_true", help="Also each option alone (1 seed, full step count).")
    parser.add_argument("--candidate", action="append", default=None, help="--set values of a custom candidate.")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}")
    with tempfile.TemporaryDirectory() as scratch:
        dataset = Path(scratch) / "shakespeare"
        prepare_dataset(resolve_source("shakespeare"), dataset, val_fraction=0.02)
        runs_dir = Path(scratch) / "runs"
        for shape in args.shapes.split(","):
            shape_args = argparse.Namespace(**vars(args))
            shape_args.steps = args.steps or {"tiny": 400, "small": 150}[shape]
            shape_args.eval_every = args.eval_every or max(1, shape_args.steps // 20)
            reference_preset, modern_preset = SHAPES[shape]
            reference = (reference_preset, [])
            candidate = (reference_preset, args.candidate) if args.candidate else (modern_preset, [])
            name = "custom" if args.candidate else modern_preset
            results = [compare(name, reference, candidate, shape_args, dataset, runs_dir)]
            print_table(f"{shape}: {shape_args.steps} reference steps, candidate {args.fraction:g} of them", results)
            if args.options:
                option_args = argparse.Namespace(**{**vars(shape_args), "seeds": 1, "fraction": 1.0})
                option_results = [
                    compare(option, reference, (reference_preset, settings), option_args, dataset, runs_dir)
                    for option, settings in OPTIONS.items()
                ]
                print_table(f"{shape}: each option alone, {shape_args.steps} steps on both sides", option_results)


if __name__ == "__main__":
    main()
