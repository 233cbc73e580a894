"""Time to loss: how many tokens and how much training time a candidate recipe needs to reach the
val loss the GPT-2 recipe ends at.

    python bench/time_to_loss.py                                  # tiny and small: modern vs GPT-2, 2 seeds
    python bench/time_to_loss.py --shapes tiny --options          # + every option alone on the GPT-2 recipe
    python bench/time_to_loss.py --shapes tiny --set train.optimizer.lr=0.04    # a variant of modern-tiny

On the built-in Shakespeare corpus, with the same data order and seed on both sides, the reference
(the `tiny` or `small` preset: GPT-2's recipe) trains for `--steps` and its final val loss is the
target. The candidate (`modern-tiny` / `modern-small` with any `--set`) trains for `--fraction` of
those steps, its schedule fitted to that shorter run, and the script reports the first evaluation
at which it reached the target: its tokens, and its training time, counted as the steps taken times
the run's median step time (evaluations are left out; the median ignores the machine's bursts of
noise, bench/README.md). Warmup is the preset's fraction of its own run. Both sides train in fp32
(`--precision`), so the figures mean the same on CPUs with and without bf16 units.

With `--options` each option of the modern recipe is added alone to the GPT-2 recipe and trained as
long as the reference, one seed: what each buys in final loss, tokens to target and step time.
Sides alternate (reference first for even seeds); one reference run per seed serves every candidate.
"""

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nashcli.config import resolve_config
from nashcli.data.prepare import prepare_dataset
from nashcli.data.sources import resolve_source
from nashcli.engine.reporter import SilentReporter
from nashcli.engine.trainer import train

SHAPES = {"tiny": ("tiny", "modern-tiny", 400), "small": ("small", "modern-small", 150)}  # reference, modern, steps
# Each option of the modern recipe on its own, added to the GPT-2 recipe. Muon needs its own learning
# rates, taken from the modern preset of the shape.
OPTIONS = {
    "rope": ["model.positions=rope"],
    "rmsnorm": ["model.norm=rmsnorm"],
    "relu2": ["model.activation=relu2"],
    "qk_norm": ["model.qk_norm=true"],
    "untied head": ["model.tie_embeddings=false"],
    "no bias": ["model.bias=false"],
    "zero-init output": ["model.zero_init_output=true"],
    "wsd schedule": ["train.schedule=wsd"],
}
MUON_KEYS = ("lr", "momentum", "embedding_lr", "head_lr")


@dataclass
class Curve:
    """One training run: its evaluations and the duration of each optimizer step."""

    tokens_per_step: int = 0
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, val_loss)
    step_s: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.evals[-1][1]

    @property
    def median_step_s(self) -> float:
        return statistics.median(self.step_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.median_step_s

    def first_step_at_or_below(self, target: float) -> "int | None":
        return next((step for step, loss in self.evals if loss <= target), None)


class CurveRecorder(SilentReporter):
    """Times each optimizer step (an evaluation or checkpoint between two steps is not counted)."""

    def __init__(self):
        self.curve, self.last = Curve(), 0.0

    def on_start(self, start):
        self.last = time.perf_counter()

    def on_step(self, record):
        now = time.perf_counter()
        self.curve.step_s.append(now - self.last)
        self.curve.tokens_per_step = record.tokens // record.step
        self.last = now

    def on_eval(self, record):
        self.curve.evals.append((record.step, record.val_loss))
        self.last = time.perf_counter()

    def on_checkpoint(self, path):
        self.last = time.perf_counter()


def run(preset: str, settings: list[str], steps: int, seed: int, args, dataset: Path, runs_dir: Path) -> Curve:
    preset_train = resolve_config(preset, settings).train
    warmup_fraction = preset_train.warmup_steps / preset_train.max_steps
    config = resolve_config(preset, [
        *settings, f"train.max_steps={steps}", f"train.warmup_steps={round(steps * warmup_fraction)}",
        f"train.eval_interval={max(1, steps // args.evals)}", "train.eval_batches=20",
        "train.checkpoint_interval=0", f"train.precision={args.precision}", f"train.seed={seed}",
        "metrics.log_interval=100000", f"data.dataset={dataset}", f"runs_dir={runs_dir}",
        f"name={preset}-{time.time_ns()}",
    ])
    recorder = CurveRecorder()
    train(config, reporter=recorder)
    return recorder.curve


@dataclass
class Result:
    reference: Curve
    candidate: Curve

    @property
    def reached_step(self) -> "int | None":
        return self.candidate.first_step_at_or_below(self.reference.final_loss)

    @property
    def token_ratio(self) -> float:
        step = self.reached_step
        if step is None:
            return float("inf")
        reference_tokens = self.reference.tokens_per_step * len(self.reference.step_s)
        return step * self.candidate.tokens_per_step / reference_tokens

    @property
    def time_ratio(self) -> float:
        step = self.reached_step
        if step is None:
            return float("inf")
        reference_s = len(self.reference.step_s) * self.reference.median_step_s
        return step * self.candidate.median_step_s / reference_s

    @property
    def speed_ratio(self) -> float:
        return self.candidate.tokens_per_s / self.reference.tokens_per_s


def ratio_text(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio != float("inf") else "not reached"


def print_line(name: str, seed: int, result: Result) -> None:
    reference, candidate = result.reference, result.candidate
    got = (
        f"reached it at step {result.reached_step}: {ratio_text(result.token_ratio)} the tokens, "
        f"{ratio_text(result.time_ratio)} the time"
        if result.reached_step else f"did not reach it (final {candidate.final_loss:.3f})"
    )
    print(
        f"  {name:18s} seed {seed}: reference {reference.final_loss:.3f} ({reference.tokens_per_s:5.0f} tok/s); "
        f"candidate {candidate.final_loss:.3f} ({candidate.tokens_per_s:5.0f} tok/s), {got}",
        flush=True,
    )


def print_table(title: str, rows: dict[str, list[Result]]) -> None:
    print(f"\n{title}")
    print("| candidate | final val loss (reference) | tokens to target | time to target | tok/s ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, results in rows.items():
        losses = ", ".join(f"{r.candidate.final_loss:.3f} ({r.reference.final_loss:.3f})" for r in results)
        print(
            f"| {name} | {losses} | {ratio_text(statistics.median(r.token_ratio for r in results))} | "
            f"{ratio_text(statistics.median(r.time_ratio for r in results))} | "
            f"{statistics.median(r.speed_ratio for r in results):.2f}x |"
        )


def measure_shape(shape: str, args, dataset: Path, runs_dir: Path) -> None:
    reference_preset, modern_preset, default_steps = SHAPES[shape]
    steps = args.steps or default_steps
    candidate_steps = max(1, round(steps * args.fraction))
    modern_name = modern_preset + "".join(f" {setting}" for setting in args.settings)
    modern_rows: list[Result] = []
    references: list[Curve] = []
    for seed_index in range(args.seeds):
        seed = 1337 + seed_index
        sides = ["reference", "candidate"] if seed_index % 2 == 0 else ["candidate", "reference"]
        curves = {
            side: run(reference_preset, [], steps, seed, args, dataset, runs_dir) if side == "reference"
            else run(modern_preset, args.settings, candidate_steps, seed, args, dataset, runs_dir)
            for side in sides
        }
        references.append(curves["reference"])
        modern_rows.append(Result(curves["reference"], curves["candidate"]))
        print_line(modern_preset, seed, modern_rows[-1])
    print_table(f"{shape}: reference {reference_preset} {steps} steps, candidate {candidate_steps} steps", {modern_name: modern_rows})
    if not args.options:
        return
    modern_muon = resolve_config(modern_preset, args.settings).train.optimizer
    options = {**OPTIONS, "muon": ["train.optimizer.name=muon", *(f"train.optimizer.{key}={getattr(modern_muon, key)}" for key in MUON_KEYS)]}
    option_rows = {}
    for name, settings in options.items():
        result = Result(references[0], run(reference_preset, settings, steps, 1337, args, dataset, runs_dir))
        print_line(name, 1337, result)
        option_rows[name] = [result]
    print_table(f"{shape}: each option alone on {reference_preset}, {steps} steps on both sides, seed 1337", option_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tiny,small", help="Comma-separated: tiny, small.")
    parser.add_argument("--steps", type=int, default=None, help="Reference steps (default: 400 tiny, 150 small).")
    parser.add_argument("--fraction", type=float, default=0.5, help="Candidate steps as a fraction of the reference's.")
    parser.add_argument("--evals", type=int, default=10, help="Evaluations per run.")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--options", action="store_true", help="Also each option alone (seed 1337, the reference's steps).")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="A --set value for the modern candidate (repeatable).")
    parser.add_argument("--precision", default="fp32", help="train.precision of every run.")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}, "
          f"precision {args.precision}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        dataset = Path(scratch) / "shakespeare"
        prepare_dataset(resolve_source("shakespeare"), dataset, val_fraction=0.02)
        for shape in args.shapes.split(","):
            measure_shape(shape, args, dataset, Path(scratch) / "runs")


if __name__ == "__main__":
    main()
