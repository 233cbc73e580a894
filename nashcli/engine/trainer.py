"""The training loop: one loop for pretraining and SFT (only the batches differ), for one process
or many under torchrun (DDP). `train(config)` wires the parts together and runs it."""

import math
import time
from pathlib import Path
from typing import Optional

import torch

from nashcli.config import NashConfig
from nashcli.engine import distributed as dist_ops
from nashcli.engine.allocator import keep_freed_memory
from nashcli.engine.batches import build_batches
from nashcli.engine.checkpoint import STATE_FILE, checkpoint_names, prune_step_checkpoints, save_checkpoint
from nashcli.engine.checkpoint_reading import load_training_state
from nashcli.engine.compile import compile_model, eager_fallback
from nashcli.engine.counters import RunCounters, SessionClock, peak_memory_mb
from nashcli.engine.distributed import DistributedContext, setup_distributed, teardown_distributed
from nashcli.engine.evaluate import evaluate, load_eval_tasks, process_summer, run_eval_tasks
from nashcli.engine.fsdp import accept_full_optimizer_state, check_fsdp_run, gathered_model_state
from nashcli.engine.fsdp import gathered_optimizer_state, load_weights, shard_model, strategy_notes, uses_fsdp
from nashcli.engine.optim import build_optimizer, set_learning_rate
from nashcli.engine.locate import ResumePoint
from nashcli.engine.precision import load_grad_scaler_state, make_grad_scaler, peak_flops, precision_notes
from nashcli.engine.precision import resolve_precision
from nashcli.engine.records import EvalRecord, RunStart, RunSummary, StepRecord, checkpoint_meta, finite_or_none
from nashcli.engine.records import resume_command
from nashcli.engine.reporter import Reporter, SilentReporter
from nashcli.engine.rng import capture_rng_state, restore_rng_state, seed_everything
from nashcli.engine.run_folder import OpenedRun, claim_folder, open_run
from nashcli.engine.schedule import budget_fraction_used, learning_rate_at, run_is_over
from nashcli.engine.step import forward_backward
from nashcli.engine.step_failures import non_finite_loss_error
from nashcli.engine.stop import StopRequests
from nashcli.errors import NashError
from nashcli.model.gpt import GPT, flops_per_token
from nashcli.runs.metrics import MetricsLogger, open_metrics


def train(
    config: NashConfig,
    *,
    resume: "ResumePoint | Path | None" = None,
    reporter: Optional[Reporter] = None,
    overwrite: bool = False,
    name_prefix: Optional[str] = None,
) -> RunSummary:
    """Train `config` into runs_dir/<name>/ and return the summary (also written to summary.json).

    resume: a run folder or name (or a ResumePoint from `find_resume`); continues exactly from its
    `last` checkpoint (its folder is used, whatever config.name says). overwrite: replace an existing
    run folder of the same name, once everything else has been checked.
    name_prefix: without config.name the run is named <name_prefix>-<timestamp> (the CLI passes the
    preset name). Under torchrun every process calls this; only rank 0 reports, logs and writes.
    """
    context = setup_distributed(config.train.device)
    if context.device.type == "cpu":
        keep_freed_memory()  # process-wide, so set here, where the process is set up
    try:
        opened = open_run(config, context, resume, overwrite, name_prefix)
        try:
            main_reporter = reporter if (reporter is not None and context.is_main) else SilentReporter()
            trainer = Trainer(opened, context, main_reporter)  # checks data, weights and state first
            claim_folder(opened, context)
            summary = trainer.run()
        finally:
            opened.close()
        dist_ops.barrier(context)  # no process tears the group down while another still uses it
        return summary
    finally:
        teardown_distributed(context)


class Trainer:
    """The parts of one training run, and the loop over them."""

    def __init__(self, opened: OpenedRun, context: DistributedContext, reporter: Reporter):
        self.context, self.reporter, self.opened = context, reporter, opened
        self.config, self.layout = opened.config, opened.layout
        train_config = self.config.train
        self.precision = resolve_precision(train_config.precision, context.device)
        seed_everything(train_config.seed)  # the same initial weights on every process
        self.model = GPT(self.config.model)
        if opened.weights is not None:
            opened.weights.load_into(self.model)
        self.model.to(context.device)
        if uses_fsdp(train_config.strategy, context):
            check_fsdp_run(train_config)
            shard_model(self.model, context, self.precision)  # in place: the optimizer must hold the shards
        self.optimizer = build_optimizer(self.model, train_config, context.device)
        accept_full_optimizer_state(self.optimizer)  # a checkpoint's full state, sharded like the parameters
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]  # a resume overwrites them
        self.grad_scaler = make_grad_scaler(self.precision)
        self.batches = build_batches(self.config, context)
        self.eval_tasks = load_eval_tasks(self.config, context)  # a task that cannot load fails the run now
        self.counters = RunCounters()
        seed_everything(train_config.seed + context.rank)  # dropout differs between processes
        if opened.resume_dir is not None:
            self._load_state(opened.resume_dir)  # last: it restores the RNG states too
        # DDP first, then compile: compiled DDP splits the graph at its gradient buckets, so the
        # all-reduce overlaps the backward (DDP around a compiled model waits for all of it).
        wrapped = dist_ops.wrap_model(self.model, context)
        self.train_model = compile_model(wrapped) if train_config.compile else wrapped
        # Evaluation runs the model without DDP's hooks: the same compiled module when nothing wraps it.
        if wrapped is self.model:
            self.compiled = self.train_model
        else:
            self.compiled = compile_model(self.model) if train_config.compile else self.model
        self.flops_per_token = flops_per_token(self.config.model, self.config.model.max_seq_len)
        self.peak_flops = peak_flops(context.device, self.precision) * context.world_size
        self.session: SessionClock  # started by run()

    def run(self) -> RunSummary:
        train_config, counters = self.config.train, self.counters
        metrics = MetricsLogger([])
        if self.context.is_main:
            self.layout.summary_path.unlink(missing_ok=True)  # a resumed run's totals are not final yet
            resume_step = counters.step if self.opened.resume_dir else None
            metrics = open_metrics(self.layout, self.config, resume_step=resume_step)
        self.reporter.on_start(self._start_record())
        self.session = SessionClock()
        stopping = final = False  # open_run and _load_state refuse a run that is already over
        stop = StopRequests()
        try:
            with stop, eager_fallback():
                while not (stopping or final):
                    stopping, final = self._train_step(stop, metrics)
                    is_best = False
                    if final or _every(counters.step, train_config.eval_interval):
                        is_best = self._evaluate(metrics)
                    names = checkpoint_names(
                        counters.step, train_config, final=final, stopping=stopping, is_best=is_best
                    )
                    if names:
                        self._save(names)
        finally:
            metrics.close()
        summary = self._summary(interrupted=not final, stop_signal=stop.signal_number)
        if self.context.is_main and not summary.interrupted:
            self.layout.write_summary(summary.summary_json())
        self.reporter.on_end(summary)
        return summary

    def _train_step(self, stop: StopRequests, metrics: MetricsLogger) -> tuple[bool, bool]:
        """One optimizer step; returns whether any process asked to stop, and whether the run is over."""
        train_config, device, counters = self.config.train, self.context.device, self.counters
        started = time.perf_counter()
        micro_batches = [
            tuple(tensor.to(device, non_blocking=True) for tensor in self.batches.train.next_batch())
            for _ in range(train_config.grad_accum_steps)
        ]
        totals = forward_backward(self.train_model, micro_batches, self.context, self.precision, self.grad_scaler)
        # One all-reduce carries the loss (for reporting and the finiteness check), the stop request and
        # rank 0's share of the time budget used (clocks differ), so that every process sees the same
        # values, uses the same learning rate and stops at the same step.
        budget_used = budget_fraction_used(self.session.elapsed(counters.elapsed_s), train_config)
        own_budget_used = budget_used if (budget_used is not None and self.context.is_main) else 0.0
        shared = torch.tensor([float(stop.requested), own_budget_used], device=device)
        loss_sum, stop_votes, shared_budget_used = dist_ops.all_reduce_sum(
            torch.cat([totals.loss_sum.reshape(1), shared]), self.context
        ).tolist()
        budget_used = None if budget_used is None else shared_budget_used
        loss = loss_sum / max(totals.target_tokens, 1)
        if not math.isfinite(loss):
            step, resume_dir = counters.step + 1, self.opened.resume_dir
            raise non_finite_loss_error(loss, step, self.session.steps + 1, resume_dir, self.layout.checkpoints_dir)
        lrs = [learning_rate_at(counters.step, train_config, base_lr, budget_used) for base_lr in self.base_lrs]
        set_learning_rate(self.optimizer, lrs)
        lr = learning_rate_at(counters.step, train_config, train_config.lr, budget_used)  # what the run reports
        self.optimizer.unscale_gradients(self.grad_scaler)  # clip the true gradients, not the fp16-scaled ones
        max_norm = train_config.grad_clip if train_config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).item()
        self.optimizer.step(self.grad_scaler)
        self.grad_scaler.update()
        self.optimizer.zero_grad()
        counters.step += 1
        counters.tokens += totals.input_tokens
        counters.last_train_loss = loss
        tokens_per_s = self.session.record_step(totals.input_tokens, time.perf_counter() - started)
        record = StepRecord(
            step=counters.step,
            tokens=counters.tokens,
            train_loss=loss,
            lr=lr,
            grad_norm=grad_norm,
            tokens_per_s=tokens_per_s,
            mfu=self._mfu(tokens_per_s),
            elapsed_s=self.session.elapsed(counters.elapsed_s),
        )
        final = run_is_over(counters.step, budget_used, train_config)
        if _every(counters.step, self.config.metrics.log_interval) or final:
            metrics.log({**record.metrics(), "tokens_per_s": self.session.interval_tokens_per_s()}, counters.step)
        self.reporter.on_step(record)
        return stop_votes > 0, final

    def _evaluate(self, metrics: MetricsLogger) -> bool:
        """Evaluate on the validation batches (each process its share); returns whether it is a new best."""
        counters = self.counters
        results = evaluate(
            self.compiled,
            self.batches.val.eval_batches(self.config.train.eval_batches),
            device=self.context.device,
            autocast=self.precision.autocast,
            sum_across_processes=process_summer(self.context),
        )
        task_metrics = run_eval_tasks(self.model, self.eval_tasks, self.context, self.precision.autocast)
        is_best = results["val_loss"] < counters.best_val_loss
        counters.best_val_loss = min(counters.best_val_loss, results["val_loss"])
        counters.last_val_loss = results["val_loss"]
        elapsed_s = self.session.elapsed(counters.elapsed_s)
        metrics.log({"tokens": counters.tokens, "elapsed_s": elapsed_s, **results, **task_metrics}, counters.step)
        self.reporter.on_eval(EvalRecord(step=counters.step, **results, task_metrics=task_metrics, is_best=is_best))
        return is_best

    def _save(self, names: list[str]) -> None:
        # Every process contributes its own RNG and data position; rank 0 writes them all.
        own = {"rng": capture_rng_state(), "data": self.batches.train.state_dict()}
        per_rank = dist_ops.gather_objects(own, self.context)
        # Under FSDP every process takes part in gathering the full weights and optimizer state to rank 0.
        model_state = gathered_model_state(self.model, self.context)
        optimizer_state = gathered_optimizer_state(self.optimizer, self.context)
        if not self.context.is_main:
            return
        counters = {**self.counters.state_dict(), "elapsed_s": self.session.elapsed(self.counters.elapsed_s)}
        state = {
            "progress": counters,  # the key of format 1 checkpoints
            "world_size": self.context.world_size,
            "optimizer": optimizer_state,
            "grad_scaler": self.grad_scaler.state_dict(),
            "ranks": per_rank,
        }
        meta = checkpoint_meta(self.config, counters, self.context.world_size, self.precision.name)
        save_checkpoint(self.layout.checkpoints_dir, names, model_state, state, meta)
        prune_step_checkpoints(self.layout, self.config.train.keep_checkpoints)
        for name in names:
            self.reporter.on_checkpoint(self.layout.checkpoint_dir(name))

    def _load_state(self, checkpoint_dir: Path) -> None:
        state = load_training_state(checkpoint_dir)
        if state["world_size"] != self.context.world_size:
            raise NashError(
                f"{checkpoint_dir} was saved by {state['world_size']} processes and this run has "
                f"{self.context.world_size}: resume with the same number (torchrun --nproc_per_node="
                f"{state['world_size']} ...), or start a new run from its weights with --init-from {self.layout.root}"
            )
        load_weights(self.model, checkpoint_dir)  # sharded or not: checkpoints hold the full weights
        own = state["ranks"][self.context.rank]
        try:  # each part checks its own saved state against itself before taking it
            self.optimizer.load_state_dict(state["optimizer"])
            load_grad_scaler_state(self.grad_scaler, state["grad_scaler"])
            self.counters.load_state_dict(state["progress"])
            self.batches.train.load_state_dict(own["data"])
            restore_rng_state(own["rng"])
        except NashError as error:
            raise NashError(f"{checkpoint_dir / STATE_FILE} cannot be resumed from: {error}") from None
        budget_used = budget_fraction_used(self.counters.elapsed_s, self.config.train)
        if budget_used is not None and budget_used >= 1.0:
            raise NashError(
                f"run {self.layout.root} already used its time budget ({self.counters.elapsed_s / 60:.2f} minutes, "
                f"train.max_minutes={self.config.train.max_minutes}): to train longer, resume with "
                "--set train.max_minutes=M"
            )

    def _start_record(self) -> RunStart:
        config, context, batches = self.config, self.context, self.batches
        return RunStart(
            run_dir=str(self.layout.root),
            data=batches.description,
            parameters=self.model.num_parameters(),
            device=str(context.device),
            precision=self.precision.name,
            world_size=context.world_size,
            batch_size=config.train.batch_size,
            grad_accum_steps=config.train.grad_accum_steps,
            seq_len=config.model.max_seq_len,
            tokens_per_step=config.tokens_per_step * context.world_size,
            start_step=self.counters.step,
            max_steps=config.train.max_steps,
            max_minutes=config.train.max_minutes,
            elapsed_s=self.counters.elapsed_s,
            peak_flops=self.peak_flops,
            resumed_from=str(self.opened.resume_dir) if self.opened.resume_dir else None,
            init_from=self.opened.weights.source if self.opened.weights else None,
            notes=self.opened.notes + precision_notes(self.precision) + batches.notes
            + strategy_notes(config.train.strategy, context)
            + [f"eval task {task.description}" for task in self.eval_tasks],
            sft_preview=batches.sft_preview,
        )

    def _summary(self, interrupted: bool, stop_signal: Optional[int]) -> RunSummary:
        counters, tokens_per_s = self.counters, self.session.mean_tokens_per_s()
        return RunSummary(
            run_dir=str(self.layout.root),
            steps=counters.step,
            tokens=counters.tokens,
            wall_time_s=self.session.elapsed(counters.elapsed_s),
            tokens_per_s=tokens_per_s,
            mfu=self._mfu(tokens_per_s),
            final_train_loss=counters.last_train_loss,
            best_val_loss=finite_or_none(counters.best_val_loss),
            final_val_loss=counters.last_val_loss,
            parameters=self.model.num_parameters(),
            precision=self.precision.name,
            device=str(self.context.device),
            world_size=self.context.world_size,
            peak_memory_mb=peak_memory_mb(self.context.device),
            interrupted=interrupted,
            stop_signal=stop_signal,
            resume_command=resume_command(str(self.layout.root), self.context.world_size),
        )

    def _mfu(self, tokens_per_s: float) -> float:
        return tokens_per_s * self.flops_per_token / self.peak_flops


def _every(step: int, interval: int) -> bool:
    return interval > 0 and step % interval == 0
