"""`nash train --devices N`: N training processes per machine, started by torch.distributed's elastic
launcher (the machinery behind torchrun, used as a library), that behave like one process.

The launching process (the CLI) starts an elastic agent, which starts the workers as
`python -u -m nashcli.engine.launch FOLDER` with the RANK/WORLD_SIZE/LOCAL_RANK environment torchrun
gives (so the worker trains exactly as under torchrun), and talks to each worker over a private
socket in FOLDER:

- the worker receives the job (the resolved config, the resume point, the options), so every
  process trains the config the launcher resolved, once;
- rank 0 forwards its reporter's records, so the launcher renders the one display;
- a worker sends the exception that stopped it, so a user error (NashError, a full disk) surfaces
  in the launcher as the same one line as in a single process, and a crash as its own traceback;
- the launcher forwards Ctrl-C (SIGINT) to the workers: they finish the step, save `last` once and
  exit 130; a second Ctrl-C interrupts them at once. SIGTERM to the launcher reaches them through the
  agent. A worker whose launcher disappears stops as if it had been sent SIGTERM.

When one worker fails, the agent stops the others (SIGTERM, then SIGKILL after its shutdown
timeout), so a crash never leaves the others waiting in a collective. The worker side imports
neither typer nor rich: only engine code runs in the workers.
"""

import contextlib
import dataclasses
import logging
import os
import queue
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Iterator, Optional

from nashcli.errors import NashError

WORKER_MODULE = "nashcli.engine.launch"
SOCKET_NAME = "workers.sock"
KEY_NAME = "authkey"
DEFAULT_MASTER_PORT = 29500  # torchrun's


@dataclass(frozen=True)
class LaunchPlan:
    """The processes of a run: `processes_per_node` on each of `nodes` machines (this one is
    `node_rank`); several machines meet at master_addr:master_port (node 0's address)."""

    processes_per_node: int
    nodes: int = 1
    node_rank: int = 0
    master_addr: Optional[str] = None
    master_port: int = DEFAULT_MASTER_PORT

    @property
    def world_size(self) -> int:
        return self.processes_per_node * self.nodes

    def resume_command(self, run_dir: str) -> str:
        """The command that continues the run with the same processes."""
        command = f"nash train --devices {self.processes_per_node}"
        if self.nodes > 1:
            command += (
                f" --nodes {self.nodes} --node-rank <this node's rank> --master-addr {self.master_addr}"
                f" --master-port {self.master_port}"
            )
        return f"{command} --resume {run_dir}"


@dataclass
class TrainingJob:
    """What every process trains: the arguments of engine.trainer.train, resolved once by the launcher."""

    config: object  # NashConfig
    resume: object = None  # Optional[ResumePoint]
    overwrite: bool = False
    name_prefix: Optional[str] = None


class TrainingProcessFailed(Exception):
    """A training process stopped for a reason that is not a user error (a crash, a kill, an
    interruption before training began): `str()` is one line for the CLI, `traceback_text` the failed
    process's own traceback when it had one, `exit_code` the code to exit with."""

    def __init__(self, message: str, traceback_text: Optional[str] = None, exit_code: int = 1):
        super().__init__(message)
        self.traceback_text = traceback_text
        self.exit_code = exit_code


def plan_processes(
    devices: str,
    device_setting: str,
    nodes: int = 1,
    node_rank: int = 0,
    master_addr: Optional[str] = None,
    master_port: Optional[int] = None,
) -> LaunchPlan:
    """The LaunchPlan of `--devices` (a number, or auto: every CUDA GPU, else one process) and the
    node options; NashError naming the option to fix when they cannot work."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices == "auto":
        per_node = gpus if (gpus and device_setting in ("auto", "cuda")) else 1
    else:
        try:
            per_node = int(devices)
        except ValueError:
            per_node = 0
        if per_node < 1:
            raise NashError(f"--devices {devices}: give a number of processes per machine (1 or more), or auto")
    uses_gpus = gpus > 0 and (device_setting == "auto" or device_setting.startswith("cuda"))
    if uses_gpus and per_node > gpus:
        raise NashError(
            f"--devices {per_node} but this machine has {gpus} GPU(s): one process per GPU, so use --devices {gpus} "
            "(or auto)"
        )
    if device_setting == "mps" and per_node * nodes > 1:
        raise NashError("train.device=mps runs one process: drop --devices/--nodes, or use --set train.device=cpu")
    if nodes < 1 or not 0 <= node_rank < nodes:
        raise NashError(f"--nodes {nodes} --node-rank {node_rank}: the node rank must be 0 to {max(nodes - 1, 0)}")
    if nodes > 1 and not master_addr:
        raise NashError(
            f"--nodes {nodes} needs --master-addr HOST: the address of node 0 (--node-rank 0), "
            "reachable from every node"
        )
    if master_port is not None and not 0 < master_port < 65536:
        raise NashError(f"--master-port {master_port}: give a TCP port from 1 to 65535")
    if per_node * nodes > 1 and _under_a_launcher():
        raise NashError(
            "--devices/--nodes start their own processes, and this one was started by torchrun: "
            "use one of the two (nash train --devices N, or torchrun ... -m nashcli train without --devices)"
        )
    return LaunchPlan(per_node, nodes, node_rank, master_addr, master_port or DEFAULT_MASTER_PORT)


def _under_a_launcher() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_training(job: TrainingJob, plan: LaunchPlan, reporter=None):
    """Train `job` in plan.processes_per_node processes on this machine (and the other nodes' in
    theirs) and return rank 0's RunSummary (here on node 0; on other nodes, None).

    `reporter` receives rank 0's records, as train()'s reporter would. A user error of any process is
    raised here as the same exception (NashError, or the OSError of a full disk); any other failure
    as TrainingProcessFailed. Ctrl-C: see the module's docstring.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    with tempfile.TemporaryDirectory(prefix="nash-launch-") as folder:
        os.chmod(folder, 0o700)  # the socket and its key are this user's only
        workers = WorkerChannel(Path(folder), job, plan, reporter)
        if plan.nodes == 1:  # torchrun --standalone: a private rendezvous on a free port
            rendezvous = dict(rdzv_backend="c10d", rdzv_endpoint="localhost:0", run_id=str(uuid.uuid4()))
        else:  # torchrun --nnodes M --node-rank R --master-addr A --master-port P
            rendezvous = dict(
                rdzv_backend="static",
                rdzv_endpoint=f"{plan.master_addr}:{plan.master_port}",
                rdzv_configs={"rank": plan.node_rank},
                run_id="nash",
            )
        config = LaunchConfig(
            min_nodes=plan.nodes,
            max_nodes=plan.nodes,
            nproc_per_node=plan.processes_per_node,
            max_restarts=0,  # a failure ends the run; --resume continues it
            monitor_interval=0.1,
            logs_specs=DefaultLogsSpecs(log_dir=str(Path(folder) / "logs")),
            signals_to_handle="SIGTERM,SIGHUP,SIGQUIT",  # SIGINT (Ctrl-C) is forwarded by WorkerChannel
            **rendezvous,
        )
        failures: dict = {}
        launcher_signal: Optional[int] = None
        try:
            with _quiet_elastic_logs(), _worker_environment(plan), _own_signal_handlers(), workers.forwarding_ctrl_c():
                elastic_launch(config, sys.executable)("-u", "-m", WORKER_MODULE, folder)
        except ChildFailedError as failed:
            failures = failed.failures
        except SignalException as signalled:  # SIGTERM/SIGHUP/SIGQUIT to the launcher: workers stopped
            launcher_signal = int(signalled.sigval)
        finally:
            workers.close()
        return workers.outcome(failures, launcher_signal)


class WorkerChannel:
    """The launcher's side of the workers' socket: hands out the job, renders rank 0's records, keeps
    what each worker said before it ended, and forwards Ctrl-C."""

    def __init__(self, folder: Path, job: TrainingJob, plan: LaunchPlan, reporter):
        self.job, self.plan, self.reporter = job, plan, reporter
        key = os.urandom(32)
        key_path = folder / KEY_NAME
        key_path.write_bytes(key)
        key_path.chmod(0o600)
        self.listener = Listener(str(folder / SOCKET_NAME), family="AF_UNIX", authkey=key)
        self.lock = threading.Lock()
        self.workers: dict[int, WorkerRecord] = {}  # by local rank
        self.summary = None  # rank 0's RunSummary
        self.run_dir: Optional[str] = None  # from rank 0's RunStart
        self.ctrl_c_count = 0
        # The signal handler only queues (SimpleQueue.put may be called from a handler); a thread sends.
        self.ctrl_c_presses: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.closing = False
        for target, name in ((self._accept, "nash-launch-accept"), (self._forward_ctrl_c, "nash-launch-ctrl-c")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                connection = self.listener.accept()
            except Exception:  # closed, or a connection that failed authentication
                if self.closing:
                    return
                continue
            thread = threading.Thread(target=self._serve, args=(connection,), name="nash-launch-worker", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, connection: Connection) -> None:
        record: Optional[WorkerRecord] = None
        try:
            _, rank, local_rank, pid = connection.recv()  # ("hello", rank, local rank, pid)
            record = WorkerRecord(rank, local_rank, pid, connection)
            connection.send(self.job)  # first: the worker reads the job before anything else
            with self.lock:  # registered and counted together: each Ctrl-C reaches it exactly once
                self.workers[local_rank] = record
                pending_ctrl_c = self.ctrl_c_count
            for _ in range(pending_ctrl_c):  # Ctrl-C pressed before this worker was there to hear it
                record.send(("signal", int(signal.SIGINT)))
            while True:
                message = connection.recv()
                self._handle(record, message)
        except (EOFError, OSError):
            pass
        finally:
            if record is not None:
                record.ended_at = record.ended_at or time.monotonic()
            connection.close()

    def _handle(self, record: "WorkerRecord", message: tuple) -> None:
        kind = message[0]
        if kind == "report":
            method, argument = message[1], message[2]
            if method == "on_start":
                self.run_dir = argument.run_dir
            if method == "on_end":
                argument = dataclasses.replace(argument, resume_command=self.plan.resume_command(argument.run_dir))
                self.summary = argument
            if self.reporter is not None:
                getattr(self.reporter, method)(argument)
        elif kind == "raised":
            _, error, traceback_text, raised_at = message
            record.error, record.traceback_text, record.ended_at = error, traceback_text, raised_at
        elif kind == "interrupted":
            record.interrupted = True

    @contextlib.contextmanager
    def forwarding_ctrl_c(self) -> Iterator[None]:
        """While active, Ctrl-C in the launcher is sent on to every worker (as a single process would
        receive it) instead of stopping the launcher."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, lambda number, frame: self.ctrl_c_presses.put(number))
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _forward_ctrl_c(self) -> None:
        while self.ctrl_c_presses.get() is not None:
            with self.lock:
                self.ctrl_c_count += 1
                workers = list(self.workers.values())
            for record in workers:
                record.send(("signal", int(signal.SIGINT)))

    def close(self) -> None:
        """After the workers ended: read what they sent last, then close the socket."""
        deadline = time.monotonic() + 10
        for thread in list(self.threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.closing = True
        self.ctrl_c_presses.put(None)
        self.listener.close()

    def outcome(self, failures: dict, launcher_signal: Optional[int]):
        """Rank 0's summary, or the exception that says why there is none (see launch_training)."""
        summary = self.summary
        if summary is not None and (summary.interrupted or (not failures and launcher_signal is None)):
            return summary
        if summary is None and not failures and launcher_signal is None:
            if self.plan.node_rank > 0:
                return None  # rank 0 runs on node 0, which shows the run
            raise TrainingProcessFailed("the training processes ended without a summary from rank 0")
        if launcher_signal is not None and not failures:
            raise TrainingProcessFailed("interrupted", exit_code=128 + launcher_signal)
        first = self._first_failure(failures)
        if first is None:  # nothing failed here: the launcher itself was signalled
            raise TrainingProcessFailed("interrupted", exit_code=128 + (launcher_signal or signal.SIGTERM))
        rank, exit_code, record = first
        what = f"training process rank {rank} of {self.plan.world_size} (pid {record.pid if record else '?'})"
        if record is not None and record.error is not None:
            if _is_user_error(record.error):
                record.error.add_note(f"in training process rank {rank}:\n{record.traceback_text}")  # for --debug
                raise record.error  # the CLI renders it as a single process would
            raise TrainingProcessFailed(
                f"{what} failed ({type(record.error).__name__}: {_first_line(record.error)}); "
                f"the other processes were stopped{self._resume_hint()}",
                traceback_text=record.traceback_text,
            )
        if record is not None and record.interrupted:
            raise TrainingProcessFailed("interrupted", exit_code=exit_code if exit_code > 128 else 130)
        if summary is not None:
            what += " after training finished"
        if exit_code < 0:
            cause = f"was killed by {_signal_name(-exit_code)}"
            if -exit_code == signal.SIGKILL:
                cause += " (the kernel does this when memory runs out)"
        else:
            cause = f"exited with code {exit_code}"
        raise TrainingProcessFailed(f"{what} {cause}; the other processes were stopped{self._resume_hint()}")

    def _first_failure(self, failures: dict) -> Optional[tuple[int, int, Optional["WorkerRecord"]]]:
        """(global rank, exit code, record) of the failure that came first: the one that ended first,
        where a communication error is taken for the consequence of another process's end."""
        by_rank = {record.rank: record for record in self.workers.values()}
        candidates = []
        for rank, failure in failures.items():
            record = by_rank.get(rank)
            ended_at = record.ended_at if (record is not None and record.ended_at) else float("-inf")
            secondary = record is not None and (
                _is_communication_error(record.error)
                or (record.error is None and failure.exitcode in (-signal.SIGTERM, 128 + signal.SIGTERM))
            )
            candidates.append((secondary, ended_at, rank, failure.exitcode, record))
        if not candidates:
            return None
        _, _, rank, exit_code, record = min(candidates, key=lambda item: item[:3])
        return rank, exit_code, record

    def _resume_hint(self) -> str:
        if self.run_dir and (Path(self.run_dir) / "checkpoints" / "last").is_dir():
            return f"; continue from its last checkpoint with: {self.plan.resume_command(self.run_dir)}"
        return ""


@dataclass
class WorkerRecord:
    """What the launcher knows of one worker."""

    rank: int
    local_rank: int
    pid: int
    connection: Connection
    error: Optional[BaseException] = None  # what stopped it, as it sent it
    traceback_text: Optional[str] = None
    interrupted: bool = False  # stopped by a second Ctrl-C
    ended_at: Optional[float] = None  # time.monotonic() of its error or its end (system-wide clock)
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: tuple) -> None:
        with self.send_lock:
            with contextlib.suppress(OSError, ValueError):  # it ended already
                self.connection.send(message)


def _is_user_error(error: BaseException) -> bool:
    """The errors a single process shows as one line (cli/app.py decides how): NashError, and the
    file system's (a full disk, a read-only folder)."""
    return isinstance(error, (NashError, OSError)) and not _is_communication_error(error)


def _is_communication_error(error: Optional[BaseException]) -> bool:
    """An error of the process group (a peer that went away), or the exit of a process that the
    launcher stopped because another one had failed."""
    if error is None:
        return False
    import torch.distributed as dist

    return isinstance(error, dist.DistError) or "Connection closed by peer" in str(error)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else "no message"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@contextlib.contextmanager
def _quiet_elastic_logs() -> Iterator[None]:
    """The agent logs every start, signal and exit at INFO/WARNING on stderr; the launcher says what
    matters in its own words instead. LOGLEVEL (torchrun's variable) keeps them."""
    if "LOGLEVEL" in os.environ:
        yield
        return
    import torch.distributed.elastic.agent.server.api  # noqa: F401 (creates the loggers)
    import torch.distributed.elastic.multiprocessing.api  # noqa: F401

    names = [
        name
        for name in logging.root.manager.loggerDict
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher"))
    ]
    loggers = [logging.getLogger(name) for name in names]
    previous = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, was_disabled in zip(loggers, previous):
            logger.disabled = was_disabled


@contextlib.contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """The agent installs handlers for SIGTERM, SIGHUP and SIGQUIT and leaves them: put back the
    launcher's own afterwards (for programs that go on after a launch, like tests)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    numbers = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    previous = {number: signal.getsignal(number) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def _worker_environment(plan: LaunchPlan) -> Iterator[None]:
    """The workers' environment (they inherit the launcher's): torch's threads shared out between the
    processes of this machine unless OMP_NUM_THREADS says otherwise, as torchrun does (it gives 1)."""
    saved = dict(os.environ)
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // plan.processes_per_node))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# ---- the worker side: runs in each training process -------------------------------------------


class ForwardingReporter:
    """Rank 0's reporter in a worker: sends each record to the launcher, which renders it."""

    def __init__(self, connection: Connection, lock: threading.Lock):
        self.connection, self.lock = connection, lock

    def _send(self, method: str, argument: object) -> None:
        with self.lock:
            with contextlib.suppress(OSError, ValueError):  # the launcher is gone: training goes on, then stops
                self.connection.send(("report", method, argument))

    def on_start(self, start) -> None:
        self._send("on_start", start)

    def on_step(self, record) -> None:
        self._send("on_step", record)

    def on_eval(self, record) -> None:
        self._send("on_eval", record)

    def on_checkpoint(self, path) -> None:
        self._send("on_checkpoint", path)

    def on_end(self, summary) -> None:
        self._send("on_end", summary)


def worker_main(folder: str) -> int:
    """A training process started by launch_training: connect, receive the job, train; returns the
    exit code (0 finished, 2 a user error, 128 + N stopped by signal N, 1 anything else)."""
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    key = (Path(folder) / KEY_NAME).read_bytes()
    connection = Client(str(Path(folder) / SOCKET_NAME), family="AF_UNIX", authkey=key)
    send_lock = threading.Lock()
    connection.send(("hello", rank, local_rank, os.getpid()))
    job: TrainingJob = connection.recv()
    threading.Thread(target=_obey_launcher, args=(connection,), name="nash-launcher", daemon=True).start()

    def send(message: tuple) -> None:
        with send_lock:
            with contextlib.suppress(OSError, ValueError):
                connection.send(message)

    try:
        from nashcli.engine.stop import interrupted_exit_code
        from nashcli.engine.trainer import train

        reporter = ForwardingReporter(connection, send_lock) if rank == 0 else None
        summary = train(
            job.config, resume=job.resume, reporter=reporter, overwrite=job.overwrite, name_prefix=job.name_prefix
        )
        return interrupted_exit_code(summary.stop_signal) if summary.interrupted else 0
    except KeyboardInterrupt:  # a second Ctrl-C, or the first before training began
        send(("interrupted",))
        return 128 + signal.SIGINT
    except BaseException as error:  # noqa: BLE001 (every failure goes to the launcher, which decides)
        raised_at = time.monotonic()
        text = traceback.format_exc()
        try:
            with send_lock:
                connection.send(("raised", _picklable(error), text, raised_at))
        except Exception:  # no launcher to tell: say it here
            sys.stderr.write(text)
        return 2 if _is_user_error(error) else 1
    finally:
        with contextlib.suppress(OSError):
            connection.close()


def _obey_launcher(connection: Connection) -> None:
    """Deliver the launcher's signals to this process; a launcher that went away (killed, its
    terminal closed) stops the run as SIGTERM would: finish the step, save, exit."""
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            break
        if message[0] == "signal":
            os.kill(os.getpid(), message[1])
    with contextlib.suppress(OSError):
        if not connection.closed:  # EOF from the launcher, not our own close at the end
            os.kill(os.getpid(), signal.SIGTERM)


def _picklable(error: BaseException) -> BaseException:
    """`error` if it survives pickling, else a RuntimeError with its type and message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
