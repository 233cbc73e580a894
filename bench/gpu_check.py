"""GPU acceptance check: nash's CUDA path end to end, with figures and pass/fail.

    python bench/gpu_check.py                          # every check (~15-25 min on one H100)
    python bench/gpu_check.py --only train,compile     # some of them
    python bench/gpu_check.py --steps 300 --out /tmp/gpu-check --json results.json

Needs a CUDA GPU (exits with status 2 and one line otherwise). Every check runs in a fresh process
of this script (clean peak memory, clean torch.compile caches, a crash stays in its check); the
built-in Shakespeare corpus is prepared once. Checks:

  train      gpt2-124m as its preset trains it (bf16 autocast, torch.compile, fused AdamW), batch
             16 x 1024, for --steps steps: tokens/s, MFU, peak memory; the loss finite and falling;
             no fallback to eager, no graph break, exactly one recompile (the evaluation graph).
             Target on one H100: MFU >= 45%.
  nanogpt    the reference: a nanoGPT-style GPT-2 (the same shape, batch, bf16, compile, fused
             AdamW) for its tokens/s. Target: nash's train tokens/s >= nanoGPT's.
  compile    the same run eager and compiled: loss curves within 1e-2, compiled >= 1.2x eager tokens/s.
  precision  fp16 (with the grad scaler) and fp32 (TF32) runs track the bf16 run: their last-10-step
             mean losses within 0.1 of bf16's, every loss finite.
  resume     fp32, deterministic algorithms: a run stopped (SIGINT) half way and resumed gives the
             uninterrupted run's losses within 1e-5 (or within the run-to-run difference, printed).
  sft        SFT with compile over examples of many lengths: no graph break, at most 3 graphs
             (not one per length), no fallback to eager.
  eval       a trained checkpoint: `nash eval` on CUDA (bf16) and CPU (fp32) within 1e-2; greedy
             generation on CUDA and CPU (fp32) gives the same first 50 tokens; generate tokens/s.
  ddp        with 2+ GPUs: `nash train --devices N` against `nash train --devices 1` at the same global
             batch: loss curves within 1e-2 (mean of the last 10 steps), >= 1.8x the tokens/s.
  fsdp       with 2+ GPUs and a train.strategy option: train.strategy=fsdp against ddp (losses within 1e-2).

Record the printed table in bench/README.md with the GPU's name.

`--smoke` rehearses the checks' code on a CPU (a tiny model, torch.compile's "eager" backend, 2 CPU
processes for ddp/fsdp): it proves the script runs, not the figures; many conditions fail there.
"""

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

CHECKS_IN_ORDER = ("train", "nanogpt", "compile", "precision", "resume", "sft", "eval", "ddp", "fsdp")
SEQUENCE = 1024  # gpt2-124m's context
SMOKE = {  # --smoke: the same code on a CPU with a tiny model
    "model": ["model.n_layers=2", "model.n_heads=2", "model.d_model=64", "model.d_ff=256", "model.max_seq_len=64"],
    "train": ["train.device=cpu", "train.batch_size=4"],
}


# ---- helpers shared by the checks -----------------------------------------------------------------


class Result:
    """A check's figures, its failed conditions and its missed performance targets."""

    def __init__(self, name: str):
        self.name, self.figures, self.problems, self.missed = name, {}, [], []

    def figure(self, key: str, value) -> None:
        self.figures[key] = value

    def require(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    def target(self, condition: bool, missed: str) -> None:
        if not condition:
            self.missed.append(missed)

    def to_json(self) -> dict:
        return {"check": self.name, "figures": self.figures, "problems": self.problems, "missed": self.missed}


class Recorder:
    """A Reporter that keeps every step's loss and time, and the run's start and summary."""

    def __init__(self, on_step: Optional[Callable] = None):
        self.losses, self.step_times, self.start, self.summary = {}, [], None, None
        self._on_step = on_step

    def on_start(self, start) -> None:
        self.start = start
        self.step_times.append(time.perf_counter())

    def on_step(self, record) -> None:
        self.step_times.append(time.perf_counter())
        self.losses[record.step] = record.train_loss
        if self._on_step is not None:
            self._on_step(record)

    def on_eval(self, record) -> None:
        pass

    def on_checkpoint(self, path) -> None:
        pass

    def on_end(self, summary) -> None:
        self.summary = summary

    def steady_tokens_per_s(self, tokens_per_step: int, skip: int = 10) -> float:
        """Tokens/s from the median step time after `skip` steps (warm-up and compilation left out)."""
        durations = [b - a for a, b in zip(self.step_times, self.step_times[1:])][skip:]
        return tokens_per_step / statistics.median(durations) if durations else float("nan")


def smoke() -> bool:
    return os.environ.get("NASH_GPU_CHECK_SMOKE") == "1"


def device() -> str:
    return "cpu" if smoke() else "cuda"


def gpu_name() -> str:
    import torch

    return "CPU (smoke rehearsal)" if smoke() else torch.cuda.get_device_name()


def gpu_count() -> int:
    import torch

    return 2 if smoke() else torch.cuda.device_count()  # smoke: 2 CPU processes


def sequence() -> int:
    return 64 if smoke() else SEQUENCE


def smoke_settings(*groups: str) -> list[str]:
    return [value for group in groups for value in SMOKE[group]] if smoke() else []


def gpt2_config(out: Path, name: str, steps: int, *extra: str):
    """gpt2-124m's preset (bf16 via auto, compile, fused AdamW) on the built-in corpus, batch 16 x 1024,
    no accumulation, no evaluation or checkpoint before the end."""
    from nashcli.config import resolve_config

    return resolve_config(
        "gpt2-124m",
        [
            *smoke_settings("model", "train"),
            f"data.dataset={out / 'data' / 'shakespeare'}",
            f"runs_dir={out / 'runs'}",
            f"name={name}",
            "train.batch_size=16",
            "train.grad_accum_steps=1",
            f"train.max_steps={steps}",
            f"train.warmup_steps={min(20, max(1, steps // 10))}",
            "train.eval_interval=0",
            "train.eval_batches=4",
            "train.checkpoint_interval=0",
            "metrics.log_interval=1",
            *extra,
        ],
    )


def tokens_per_step(recorder: "Recorder") -> int:
    return recorder.start.tokens_per_step


def dynamo_state() -> dict:
    """Graphs compiled and graph breaks so far in this process."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": sum(counters["graph_break"].values())}


def reset_dynamo() -> None:
    import torch
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def trained(config, reporter=None, resume=None):
    """train(config) with `reporter`, and the 'compile fell back to eager' warnings it raised."""
    from nashcli.engine.trainer import train

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(config, reporter=reporter, resume=resume)
    fallbacks = [str(w.message) for w in caught if "fell back to eager" in str(w.message)]
    return summary, fallbacks


def losses_fall_and_stay_finite(result: Result, losses: dict, what: str) -> None:
    values = [losses[step] for step in sorted(losses)]
    result.require(all(math.isfinite(value) for value in values), f"{what}: a non-finite loss")
    head, tail = statistics.mean(values[:10]), statistics.mean(values[-10:])
    result.figure(f"{what} loss first10 -> last10", f"{head:.3f} -> {tail:.3f}")
    result.require(tail < head - 0.5, f"{what}: the loss did not fall ({head:.3f} -> {tail:.3f})")


def nash_command(*args: str, timeout_s: float = 1800) -> subprocess.CompletedProcess:
    finished = subprocess.run(
        [sys.executable, "-m", "nashcli", *args], capture_output=True, text=True, timeout=timeout_s,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    if finished.returncode != 0:
        raise RuntimeError(f"nash {' '.join(args[:3])} ... exited {finished.returncode}:\n{finished.stderr[-3000:]}")
    return finished


def metrics_of(run_dir: Path) -> tuple[dict, float]:
    """(step -> train loss, steady tokens/s from step 20 on) of a run's metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [record for record in records if "train_loss" in record]
    losses = {record["step"]: record["train_loss"] for record in steps}
    first = next((record for record in steps if record["step"] >= 20), steps[0])
    last = steps[-1]
    elapsed = last["elapsed_s"] - first["elapsed_s"]
    return losses, (last["tokens"] - first["tokens"]) / elapsed if elapsed > 0 else float("nan")


def set_args(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


# ---- the checks (each runs in its own process) ---------------------------------------------------


def check_train(args, out: Path, result: Result) -> None:
    import torch

    from nashcli.engine.precision import Precision, peak_flops
    from nashcli.model.gpt import flops_per_token

    reset_dynamo()
    config = gpt2_config(out, "train", args.steps, "train.eval_interval=0")
    recorder = Recorder()
    summary, fallbacks = trained(config, recorder)
    tokens_per_s = recorder.steady_tokens_per_s(tokens_per_step(recorder))
    peak = peak_flops(torch.device(device()), Precision(summary.precision, device()))
    mfu = tokens_per_s * flops_per_token(config.model, sequence()) / peak
    graphs = dynamo_state()
    result.figure("gpu", gpu_name())
    result.figure("precision", summary.precision)
    result.figure("tokens/s (steady)", round(tokens_per_s))
    result.figure("MFU (steady)", f"{mfu:.1%}")
    result.figure("MFU (run mean)", f"{summary.mfu:.1%}")
    result.figure("peak memory (MB)", round(summary.peak_memory_mb))
    result.figure("graphs / graph breaks", f"{graphs['graphs']} / {graphs['graph_breaks']}")
    losses_fall_and_stay_finite(result, recorder.losses, "train")
    result.require(summary.precision == "bf16", f"auto picked {summary.precision}, not bf16")
    result.require(not fallbacks, f"compile fell back to eager: {fallbacks[:1]}")
    result.require(graphs["graph_breaks"] == 0, f"{graphs['graph_breaks']} graph breaks")
    # The training graph, and the evaluation graph (no grad, logits): one recompile.
    result.require(graphs["graphs"] == 2, f"{graphs['graphs']} graphs compiled, expected 2 (train + eval)")
    result.target(mfu >= 0.45 or "H100" not in gpu_name(), f"MFU {mfu:.1%} < 45% on an H100")


def check_nanogpt(args, out: Path, result: Result) -> None:
    """nanoGPT's model and loop (karpathy/nanoGPT model.py, condensed): the reference tokens/s."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from nashcli.data.pretrain import PretrainBatches

    class Block(nn.Module):
        def __init__(self, width: int, heads: int):
            super().__init__()
            self.heads = heads
            self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.c_attn, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.c_fc, self.mlp_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + self.c_proj(y)
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class NanoGPT(nn.Module):
        def __init__(self, vocab: int = 50304, width: int = 768, layers: int = 12, heads: int = 12):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(sequence(), width)
            self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
            self.ln_f = nn.LayerNorm(width)
            self.lm_head = nn.Linear(width, vocab, bias=False)
            self.wte.weight = self.lm_head.weight
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, std=0.02)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
            for block in self.blocks:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    torch.manual_seed(1337)
    shape = dict(width=64, layers=2, heads=2) if smoke() else {}
    model = NanoGPT(**shape).to(device())
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    compiled = torch.compile(model)
    batch_size = 4 if smoke() else 16
    batches = PretrainBatches(out / "data" / "shakespeare", "train", seq_len=sequence(), batch_size=batch_size, seed=0)
    times = []
    for _ in range(min(args.steps, 120)):
        x, y = (tensor.to(device(), non_blocking=True) for tensor in batches.next_batch())
        with torch.autocast(device(), dtype=torch.bfloat16):
            loss = compiled(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # nanoGPT syncs once a step too (its logging)
        times.append(time.perf_counter())
    durations = [b - a for a, b in zip(times, times[1:])][10:]
    result.figure("nanoGPT tokens/s (steady)", round(batch_size * sequence() / statistics.median(durations)))


def check_compile(args, out: Path, result: Result) -> None:
    steps = min(args.steps, 100)
    runs = {}
    for compiled in (False, True):
        reset_dynamo()
        recorder = Recorder()
        config = gpt2_config(out, f"compile-{compiled}", steps, f"train.compile={str(compiled).lower()}")
        _, fallbacks = trained(config, recorder)
        runs[compiled] = recorder
        result.require(not fallbacks, f"compile fell back to eager: {fallbacks[:1]}")
    eager, compiled = runs[False], runs[True]
    difference = max(abs(eager.losses[step] - compiled.losses[step]) for step in eager.losses)
    eager_speed, compiled_speed = (run.steady_tokens_per_s(tokens_per_step(run)) for run in (eager, compiled))
    speed_up = compiled_speed / eager_speed
    result.figure("eager tokens/s", round(eager_speed))
    result.figure("compiled tokens/s", round(compiled_speed))
    result.figure("compiled / eager", f"{speed_up:.2f}x")
    result.figure("max loss difference", f"{difference:.2e}")
    result.require(difference <= 1e-2, f"eager and compiled losses differ by {difference:.3g} > 1e-2")
    result.target(speed_up >= 1.2, f"compiled is {speed_up:.2f}x eager, below 1.2x")


def check_precision(args, out: Path, result: Result) -> None:
    steps = min(args.steps, 150)
    tails = {}
    for precision in ("bf16", "fp16", "fp32"):
        reset_dynamo()
        recorder = Recorder()
        config = gpt2_config(out, f"precision-{precision}", steps, f"train.precision={precision}")
        summary, fallbacks = trained(config, recorder)
        values = [recorder.losses[step] for step in sorted(recorder.losses)]
        tails[precision] = statistics.mean(values[-10:])
        speed = round(recorder.steady_tokens_per_s(tokens_per_step(recorder)))
        result.figure(f"{precision} last10 loss / tokens/s", f"{tails[precision]:.3f} / {speed}")
        result.require(all(math.isfinite(value) for value in values), f"{precision}: a non-finite loss")
        result.require(not fallbacks, f"{precision}: compile fell back to eager")
    for precision in ("fp16", "fp32"):
        gap = abs(tails[precision] - tails["bf16"])
        result.require(gap <= 0.1, f"{precision} ends {gap:.3f} away from bf16 (> 0.1)")


def check_resume(args, out: Path, result: Result) -> None:
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    steps, cut = 30, 15
    extra = ("train.precision=fp32", "train.compile=false", "train.batch_size=8", "train.checkpoint_interval=0")

    def run(name: str, stop_at: Optional[int] = None, resume: Optional[Path] = None) -> Recorder:
        def stop(record) -> None:
            if stop_at is not None and record.step == stop_at:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: finish the step, save `last`, stop

        recorder = Recorder(on_step=stop)
        trained(gpt2_config(out, name, steps, *extra), recorder, resume=resume)
        return recorder

    first, second = run("resume-full-a"), run("resume-full-b")
    stopped = run("resume-cut", stop_at=cut)
    resumed = run("resume-cut", resume=out / "runs" / "resume-cut")
    run_to_run = max(abs(first.losses[step] - second.losses[step]) for step in first.losses)
    after = sorted(resumed.losses)
    difference = max(abs(resumed.losses[step] - first.losses[step]) for step in after)
    result.figure("stopped after step", max(stopped.losses))
    result.figure("resumed steps", f"{after[0]}..{after[-1]}")
    result.figure("max difference after resume", f"{difference:.2e}")
    result.figure("run-to-run difference", f"{run_to_run:.2e}")
    result.require(stopped.summary.interrupted, "the run did not stop on SIGINT")
    result.require(after and after[0] == max(stopped.losses) + 1, "the resumed run did not continue where it stopped")
    result.require(
        difference <= max(1e-5, run_to_run),
        f"resume differs by {difference:.3g} (> 1e-5 and > the run-to-run difference {run_to_run:.3g})",
    )


def check_sft(args, out: Path, result: Result) -> None:
    import random

    from nashcli.config import resolve_config

    text = (out / "data" / "corpus.txt").read_text(encoding="utf-8").split()
    chooser = random.Random(0)
    sft_file = out / "data" / "sft.jsonl"
    with sft_file.open("w", encoding="utf-8") as file:
        for _ in range(3000):  # prompts of 5-120 words, completions of 3-60: lengths vary every batch
            start = chooser.randrange(len(text) - 200)
            prompt_words, completion_words = chooser.randint(5, 120), chooser.randint(3, 60)
            prompt = " ".join(text[start : start + prompt_words])
            completion = " ".join(text[start + prompt_words : start + prompt_words + completion_words])
            file.write(json.dumps({"prompt": prompt, "completion": " " + completion}) + "\n")
    reset_dynamo()
    config = resolve_config(
        "gpt2-124m",
        [
            *smoke_settings("model", "train"),
            f"data.sft_file={sft_file}", "data.dataset=null", f"runs_dir={out / 'runs'}", "name=sft",
            "train.batch_size=8", "train.grad_accum_steps=1", f"train.max_steps={20 if smoke() else 60}",
            "train.warmup_steps=5",
            "train.eval_interval=30", "train.eval_batches=4", "train.checkpoint_interval=0", "metrics.log_interval=1",
        ],
    )
    recorder = Recorder()
    summary, fallbacks = trained(config, recorder)
    graphs = dynamo_state()
    result.figure("steps", summary.steps)
    result.figure("graphs / graph breaks", f"{graphs['graphs']} / {graphs['graph_breaks']}")
    result.figure("tokens/s", round(summary.tokens_per_s))
    result.require(not fallbacks, f"compile fell back to eager: {fallbacks[:1]}")
    result.require(graphs["graph_breaks"] == 0, f"{graphs['graph_breaks']} graph breaks")
    # First length (static), then one dynamic graph for every other length, then evaluation.
    result.require(graphs["graphs"] <= 3, f"{graphs['graphs']} graphs for 60 steps: a recompile per length")
    result.require(all(math.isfinite(value) for value in recorder.losses.values()), "a non-finite SFT loss")


def check_eval(args, out: Path, result: Result) -> None:
    import torch

    from nashcli.data.tokenizer import get_tokenizer
    from nashcli.engine.loading import EvalRequest, load_model, prepare_evaluation
    from nashcli.model.sampling import generate_tokens

    config = gpt2_config(out, "eval", min(args.steps, 200), "train.compile=false", "train.checkpoint_interval=0")
    trained(config)
    run_dir = str(out / "runs" / "eval")
    losses = {}
    for where, precision in (("cuda", "bf16"), ("cpu", "fp32")):
        request = EvalRequest(
            source=run_dir, device=device() if where == "cuda" else "cpu", precision=precision, batch_size=4,
            max_batches=4,
        )
        losses[where] = prepare_evaluation(request).run()["val_loss"]
    result.figure("val loss cuda bf16 / cpu fp32", f"{losses['cuda']:.4f} / {losses['cpu']:.4f}")
    gap = abs(losses["cuda"] - losses["cpu"])
    result.require(gap <= 1e-2, f"CUDA and CPU eval differ by {gap:.3g}")

    prompt = get_tokenizer().encode("ROMEO:")
    greedy = {}
    for where in ("cuda", "cpu"):
        model, _ = load_model(run_dir, device=device() if where == "cuda" else "cpu")
        started = time.perf_counter()
        greedy[where] = list(generate_tokens(model, prompt, 50, temperature=0))
        if where == "cuda":
            if not smoke():
                torch.cuda.synchronize()
            result.figure("greedy generate tokens/s (cuda, fp32+TF32)", round(50 / (time.perf_counter() - started)))
    same = next((index for index, (a, b) in enumerate(zip(greedy["cuda"], greedy["cpu"])) if a != b), 50)
    result.figure("same greedy tokens (of 50)", same)
    result.require(same == 50, f"greedy tokens differ from token {same} on (CUDA fp32 with TF32 vs CPU fp32)")


def check_ddp(args, out: Path, result: Result) -> None:
    gpus = gpu_count()
    if gpus < 2:
        result.figure("skipped", "one GPU")
        return
    steps = min(args.steps, 150)
    common = [
        *smoke_settings("model", "train"),
        *(["train.compile=false"] if smoke() else []),  # inductor on a CPU: minutes a graph
        f"data.dataset={out / 'data' / 'shakespeare'}", f"runs_dir={out / 'runs'}", "train.batch_size=8",
        f"train.max_steps={steps}", "train.warmup_steps=15", "train.eval_interval=0", "train.checkpoint_interval=0",
        "metrics.log_interval=1",
    ]
    nash_command("train", "--preset", "gpt2-124m", "--devices", "1", "--run", "ddp-1", "--quiet",
                 *set_args(common + [f"train.grad_accum_steps={gpus}"]))
    nash_command("train", "--preset", "gpt2-124m", "--devices", str(gpus), "--run", f"ddp-{gpus}", "--quiet",
                 *set_args(common + ["train.grad_accum_steps=1"]))
    one, one_tokens_per_s = metrics_of(out / "runs" / "ddp-1")
    many, many_tokens_per_s = metrics_of(out / "runs" / f"ddp-{gpus}")
    tail_gap = abs(statistics.mean(list(one.values())[-10:]) - statistics.mean(list(many.values())[-10:]))
    result.figure("GPUs", gpus)
    result.figure("tokens/s 1 GPU / N GPUs", f"{round(one_tokens_per_s)} / {round(many_tokens_per_s)}")
    result.figure("speed-up", f"{many_tokens_per_s / one_tokens_per_s:.2f}x")
    result.figure("max step loss difference", f"{max(abs(one[s] - many[s]) for s in one):.2e}")
    result.require(tail_gap <= 1e-2, f"N GPUs end {tail_gap:.3g} away from 1 GPU at the same global batch")
    result.target(many_tokens_per_s >= 1.8 * one_tokens_per_s * gpus / 2, "below 0.9x linear scaling")


def check_fsdp(args, out: Path, result: Result) -> None:
    from nashcli.config.models import TrainConfig

    gpus = gpu_count()
    if gpus < 2 or "strategy" not in TrainConfig.model_fields:
        result.figure("skipped", "one GPU" if gpus < 2 else "no train.strategy option")
        return
    steps = min(args.steps, 100)
    common = [
        *smoke_settings("model", "train"),
        *(["train.compile=false"] if smoke() else []),  # inductor on a CPU: minutes a graph
        f"data.dataset={out / 'data' / 'shakespeare'}", f"runs_dir={out / 'runs'}", "train.batch_size=8",
        f"train.max_steps={steps}", "train.warmup_steps=10", "train.eval_interval=0", "train.grad_accum_steps=1",
        "train.checkpoint_interval=0", "metrics.log_interval=1",
    ]
    curves = {}
    for strategy in ("ddp", "fsdp"):
        nash_command("train", "--preset", "gpt2-124m", "--devices", str(gpus), "--run", f"strategy-{strategy}",
                     "--quiet", *set_args(common + [f"train.strategy={strategy}"]))
        curves[strategy] = metrics_of(out / "runs" / f"strategy-{strategy}")
    gap = max(abs(curves["ddp"][0][step] - curves["fsdp"][0][step]) for step in curves["ddp"][0])
    result.figure("tokens/s ddp / fsdp", f"{round(curves['ddp'][1])} / {round(curves['fsdp'][1])}")
    result.figure("max loss difference", f"{gap:.2e}")
    result.require(gap <= 1e-2, f"FSDP and DDP losses differ by {gap:.3g}")


CHECKS = {
    "train": check_train, "nanogpt": check_nanogpt, "compile": check_compile, "precision": check_precision,
    "resume": check_resume, "sft": check_sft, "eval": check_eval, "ddp": check_ddp, "fsdp": check_fsdp,
}


# ---- the parent: prepare, run each check in a fresh process, print the table --------------------


def prepare_corpus(out: Path) -> None:
    from nashcli.data.prepare import prepare_dataset
    from nashcli.data.sources import resolve_source

    target = out / "data" / "shakespeare"
    if not target.is_dir():
        prepare_dataset(resolve_source("shakespeare"), target)
    corpus = out / "data" / "corpus.txt"
    if not corpus.is_file():
        import gzip

        from nashcli.assets import SHAKESPEARE_PATH

        with gzip.open(SHAKESPEARE_PATH, "rt", encoding="utf-8") as file:
            corpus.write_text("\n".join(json.loads(line)["text"] for line in file), encoding="utf-8")


def run_check_here(name: str, args, out: Path) -> int:
    result = Result(name)
    try:
        CHECKS[name](args, out, result)
    except Exception as error:  # reported as the check's failure; the other checks still run
        import traceback

        traceback.print_exc()
        result.problems.append(f"crashed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    (out / f"{name}.json").write_text(json.dumps(result.to_json(), indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CHECKS_IN_ORDER), help="comma-separated checks to run")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the train check (others use fewer)")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write every check's result to this file")
    parser.add_argument("--timeout-s", type=float, default=1800, help="per check")
    parser.add_argument("--run-check", default=None, help=argparse.SUPPRESS)  # internal: one check, in this process
    parser.add_argument("--smoke", action="store_true", help="rehearse the checks' code on a CPU (tiny model)")
    args = parser.parse_args()

    import torch

    if args.smoke:
        os.environ["NASH_GPU_CHECK_SMOKE"] = "1"  # the checks' processes inherit it
    if smoke():  # inductor on a CPU takes minutes a graph: dynamo's own backend shows graphs and breaks
        import functools

        torch.compile = functools.partial(torch.compile, backend="eager")
    elif not torch.cuda.is_available():
        print(
            f"gpu_check.py needs a CUDA GPU: this torch ({torch.__version__}) sees none. Run it on a machine with "
            "an NVIDIA GPU and a CUDA build of torch.",
            file=sys.stderr,
        )
        return 2
    if args.run_check is not None:
        return run_check_here(args.run_check, args, args.out)

    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {unknown}: choose from {', '.join(CHECKS_IN_ORDER)}")
    out = args.out or Path(tempfile.mkdtemp(prefix="nash-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"{gpu_name()} x {gpu_count()}, torch {torch.__version__}, working in {out}")
    prepare_corpus(out)
    results = []
    for name in names:
        started = time.perf_counter()
        environment = {**os.environ, "WANDB_MODE": "disabled"}
        if name == "resume":  # deterministic cuBLAS: set before the process's first CUDA call
            environment["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        command = [sys.executable, __file__, "--run-check", name, "--out", str(out), "--steps", str(args.steps)]
        try:
            subprocess.run(command, env=environment, timeout=args.timeout_s, check=False)
            result = json.loads((out / f"{name}.json").read_text())
        except (subprocess.TimeoutExpired, FileNotFoundError) as error:
            result = {"check": name, "figures": {}, "problems": [f"no result ({type(error).__name__})"], "missed": []}
        result["seconds"] = round(time.perf_counter() - started)
        results.append(result)
        print_result(result)
    train_figures = next((r["figures"] for r in results if r["check"] == "train"), {})
    nanogpt_figures = next((r["figures"] for r in results if r["check"] == "nanogpt"), {})
    if "tokens/s (steady)" in train_figures and "nanoGPT tokens/s (steady)" in nanogpt_figures:
        ratio = train_figures["tokens/s (steady)"] / nanogpt_figures["nanoGPT tokens/s (steady)"]
        print(f"\nnash / nanoGPT tokens/s: {ratio:.2f}x" + ("" if ratio >= 1.0 else "  (target >= 1.0x MISSED)"))
    failed = [r["check"] for r in results if r["problems"]]
    missed = [r["check"] for r in results if r["missed"]]
    print(
        f"\n{len(results) - len(failed)}/{len(results)} checks passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
        + (f"; targets missed: {', '.join(missed)}" if missed else "")
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if failed or missed else 0


def print_result(result: dict) -> None:
    status = "FAIL" if result["problems"] else ("TARGET MISSED" if result["missed"] else "ok")
    print(f"\n== {result['check']}: {status} ({result.get('seconds', '?')} s)")
    for key, value in result["figures"].items():
        print(f"   {key}: {value}")
    for problem in result["problems"]:
        print(f"   FAIL: {problem}")
    for missed in result["missed"]:
        print(f"   TARGET MISSED: {missed}")


if __name__ == "__main__":
    sys.exit(main())
