"""`nash chat`: talk with a fine-tuned model in the chat format SFT trained on.

Answers stream to stdout, each followed by a newline; the prompt and every message go to stderr. When
stdin is not a terminal, each line is one user turn, so `nash chat RUN < questions.txt > answers.txt`
writes one answer per question.
"""

import signal
import sys
from typing import Annotated, Optional

import typer
from rich.markup import escape

from nashcli.cli.console import err_console, print_error
from nashcli.cli.model_options import (
    CheckpointOption,
    DeviceOption,
    SeedOption,
    SourceArgument,
    TemperatureOption,
    TopKOption,
    TopPOption,
)
from nashcli.errors import NashError

RESET_COMMAND = "/reset"
EXIT_COMMAND = "/exit"


def command(
    source: SourceArgument,
    system: Annotated[Optional[str], typer.Option("--system", help="A system message to open the conversation.")] = None,
    max_tokens: Annotated[
        Optional[int],
        typer.Option(
            "--max-tokens", min=1, show_default="200, or half the context if less", help="New tokens per answer at most."
        ),
    ] = None,
    temperature: TemperatureOption = 0.8,
    top_k: TopKOption = None,
    top_p: TopPOption = None,
    seed: SeedOption = None,
    checkpoint: CheckpointOption = "best",
    device: DeviceOption = "auto",
) -> None:
    """Chat with a fine-tuned model: several turns, answers streamed, the KV cache kept between turns.

    Type a message and press Enter; /reset starts over, /exit or Ctrl-D leaves. Ctrl-C stops an answer
    (what it said so far stays in the conversation); at the prompt it leaves (exit code 130). When the
    conversation outgrows the model's context, the oldest turns are dropped, and it says so.

    With stdin not a terminal, each line is one turn (blank lines are skipped) and each answer is
    written to stdout followed by a newline.

    Example: nash chat runs/sft --system "You are terse." --temperature 0.7
    """
    from nashcli.data.tokenizer import get_tokenizer
    from nashcli.engine.chat import ChatSampling, ChatSession, default_max_answer_tokens
    from nashcli.engine.loading import load_model
    from nashcli.engine.stop import StopRequests, interrupted_exit_code
    from nashcli.model.sampling import seeded_generator

    model, _ = load_model(source, checkpoint=checkpoint, device=device)
    context = model.config.max_seq_len
    if max_tokens is None:
        max_tokens = default_max_answer_tokens(context)
    sampling = ChatSampling(max_tokens, temperature, top_k, top_p)
    session = ChatSession(model, get_tokenizer(), sampling, system=system, generator=seeded_generator(model, seed))
    interactive = _stdin_is_terminal()
    if interactive:
        _say(f"chatting with {source} ({context}-token context, answers up to {sampling.max_answer_tokens} tokens): "
             f"{RESET_COMMAND} starts over, {EXIT_COMMAND} or Ctrl-D leaves, Ctrl-C stops an answer")
    while True:
        try:
            line = _read_turn(interactive)
        except KeyboardInterrupt:
            err_console.print()  # the shell's prompt starts on a line of its own
            raise typer.Exit(code=interrupted_exit_code(signal.SIGINT)) from None
        if line is None or line == EXIT_COMMAND:
            return
        if line == RESET_COMMAND:
            session.reset()
            _say("conversation cleared")
            continue
        if not line:
            continue
        try:
            turn = session.ask(line)
        except NashError as error:
            print_error(str(error))
            if not interactive:
                _write("\n")  # keep one output line per input line
            continue
        if turn.dropped_turns:
            oldest = "oldest turn" if turn.dropped_turns == 1 else f"{turn.dropped_turns} oldest turns"
            _say(f"the conversation outgrew the {context}-token context: dropped the {oldest} ({RESET_COMMAND} starts over)")
        with StopRequests() as stop:
            for text in turn.stream(should_stop=lambda: stop.requested):
                _write(text)
        _write("\n")
        if stop.signal_number == signal.SIGTERM:
            raise typer.Exit(code=interrupted_exit_code(signal.SIGTERM))
        if turn.ended_by == "stopped":
            _say("stopped: the answer so far stays in the conversation")
        elif turn.ended_by == "max_tokens":
            _say(f"the answer reached {sampling.max_answer_tokens} tokens (--max-tokens)")


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _read_turn(interactive: bool) -> Optional[str]:
    """The next user message without surrounding spaces; None at the end of input."""
    if interactive:
        err_console.print("[bold]you>[/] ", end="")
        try:
            return input().strip()
        except EOFError:
            err_console.print()
            return None
    line = sys.stdin.readline()
    return line.strip() if line else None


def _say(message: str) -> None:
    err_console.print(f"[dim]{escape(message)}[/]", soft_wrap=True)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()  # stream: each piece shows as soon as it is sampled
