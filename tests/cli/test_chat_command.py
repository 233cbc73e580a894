"""`nash chat` on a real (tiny) trained run: piped turns, /reset and /exit, Ctrl-C, dropped turns."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from nashcli.cli.app import app
from nashcli.data.tokenizer import get_tokenizer
from nashcli.engine import chat as chat_engine
from nashcli.engine.chat import ChatSampling, ChatSession
from nashcli.engine.loading import load_model
from nashcli.engine.trainer import train

runner = CliRunner()
CONTEXT = 64  # tokens: room for a few short turns in the chat format


@pytest.fixture(scope="module")
def chat_run(tiny_config, tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    config = tiny_config(
        "name=chat", f"runs_dir={runs_dir}", f"model.max_seq_len={CONTEXT}", "train.max_steps=2",
        "train.eval_interval=2", "train.checkpoint_interval=2", "train.eval_batches=1",
    )
    train(config)
    return runs_dir / "chat"


def invoke(*args, stdin: str = ""):
    return runner.invoke(app, ["chat", *[str(arg) for arg in args]], input=stdin)


def expected_answers(run, turns: list[str], seed: int, max_tokens: int, system=None) -> list[str]:
    """What the engine answers to `turns` ("/reset" starts over), sampling as `nash chat --seed` does."""
    model, _ = load_model(str(run), checkpoint="best", device="cpu")
    sampling = ChatSampling(max_tokens, temperature=0.8)
    session = ChatSession(model, get_tokenizer(), sampling, system=system, generator=torch.Generator().manual_seed(seed))
    answers = []
    for text in turns:
        if text == "/reset":
            session.reset()
            continue
        turn = session.ask(text)
        answers.append("".join(turn.stream()))
    return answers


def test_piped_turns_get_one_answer_each_on_stdout_and_messages_on_stderr(chat_run):
    result = invoke(chat_run, "--seed", "3", "--max-tokens", "6", "--system", "Be brief.",
                    stdin="Hello there\n\nHow are you?\nWhy?\n")
    assert result.exit_code == 0, result.output
    answers = expected_answers(chat_run, ["Hello there", "How are you?", "Why?"], 3, 6, system="Be brief.")
    assert result.stdout == "".join(answer + "\n" for answer in answers)  # the blank line is skipped
    assert "you>" not in result.output and "\x1b[" not in result.stdout


def test_reset_starts_over_and_exit_leaves(chat_run):
    turns = ["Hello there", "/reset", "Hello there", "/exit", "never read"]
    result = invoke(chat_run, "--seed", "4", "--max-tokens", "6", stdin="\n".join(turns) + "\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(answer + "\n" for answer in expected_answers(chat_run, turns[:3], 4, 6))
    assert "conversation cleared" in result.stderr


def test_when_the_conversation_outgrows_the_context_it_says_so(chat_run):
    turns = [f"Question number {n}: what do you think?" for n in range(4)]
    result = invoke(chat_run, "--seed", "0", "--max-tokens", "8", stdin="\n".join(turns) + "\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(answer + "\n" for answer in expected_answers(chat_run, turns, 0, 8))
    assert f"the conversation outgrew the {CONTEXT}-token context: dropped the oldest turn (" in result.stderr


def test_a_message_too_long_is_one_error_line_and_an_empty_answer(chat_run):
    result = invoke(chat_run, "--seed", "0", "--max-tokens", "8", stdin="word " * 80 + "\nHello\n")
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("\n")
    assert lines[0] == "" and len(lines) >= 3  # the refused turn keeps its line; the next one is answered
    assert "error: this message takes" in result.stderr and "shorten it, or lower --max-tokens" in result.stderr


def test_max_tokens_that_leave_no_room_is_a_user_error(chat_run):
    result = invoke(chat_run, "--max-tokens", str(CONTEXT))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: the chat markers take") and result.stderr.count("\n") == 1


def test_ctrl_c_mid_answer_stops_that_answer_not_the_session(chat_run, monkeypatch):
    real_continue_tokens = chat_engine.continue_tokens
    calls = []

    def interrupted_after_three_tokens(*args, **kwargs):
        calls.append(1)
        for produced, token in enumerate(real_continue_tokens(*args, **kwargs), start=1):
            if len(calls) == 1 and produced == 3:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the third token is shown
            yield token

    monkeypatch.setattr(chat_engine, "continue_tokens", interrupted_after_three_tokens)
    result = invoke(chat_run, "--seed", "1", "--max-tokens", "10", stdin="Tell me a story\nAnd then?\n")
    assert result.exit_code == 0, result.output
    assert "stopped: the answer so far stays in the conversation" in result.stderr
    monkeypatch.setattr(chat_engine, "continue_tokens", real_continue_tokens)
    tokenizer = get_tokenizer()
    model, _ = load_model(str(chat_run), checkpoint="best", device="cpu")
    session = ChatSession(model, tokenizer, ChatSampling(10), generator=torch.Generator().manual_seed(1))
    first = session.ask("Tell me a story")
    first_answer = "".join(first.stream(should_stop=lambda: len(first.answer_ids) == 3))
    second_answer = "".join(session.ask("And then?").stream())
    assert result.stdout == first_answer + "\n" + second_answer + "\n"
    assert len(first.answer_ids) == 3 and first.ended_by == "stopped"


def test_sigterm_mid_answer_ends_the_session_with_code_143(chat_run, monkeypatch):
    real_continue_tokens = chat_engine.continue_tokens

    def terminated_after_two_tokens(*args, **kwargs):
        for produced, token in enumerate(real_continue_tokens(*args, **kwargs), start=1):
            if produced == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            yield token

    def unhandled(number, frame):
        raise AssertionError("SIGTERM reached the test's handler: chat did not handle it")

    monkeypatch.setattr(chat_engine, "continue_tokens", terminated_after_two_tokens)
    previous = signal.signal(signal.SIGTERM, unhandled)  # a failing test, not a killed test process
    try:
        result = invoke(chat_run, "--seed", "1", "--max-tokens", "10", stdin="Tell me a story\nAnd then?\n")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 143, result.output
    monkeypatch.setattr(chat_engine, "continue_tokens", real_continue_tokens)
    model, _ = load_model(str(chat_run), checkpoint="best", device="cpu")
    session = ChatSession(model, get_tokenizer(), ChatSampling(10), generator=torch.Generator().manual_seed(1))
    first = session.ask("Tell me a story")
    assert result.stdout == "".join(first.stream(should_stop=lambda: len(first.answer_ids) == 2)) + "\n"


def test_ctrl_c_at_the_prompt_leaves_with_code_130(chat_run):
    process = subprocess.Popen(
        [sys.executable, "-m", "nashcli", "chat", str(chat_run), "--max-tokens", "8"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # A refused turn answers with exactly one empty line (an answer may hold newlines of its own):
    # once it is out, the next thing chat does is wait for a line.
    process.stdin.write("word " * 80 + "\n")
    process.stdin.flush()
    answer = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert answer == "\n" and process.returncode == 130, stderr
    assert "Traceback" not in stderr


def test_a_terminal_gets_a_prompt_on_stderr_and_eof_leaves(chat_run, monkeypatch):
    from nashcli.cli import chat as chat_command

    lines = iter(["Hello there"])

    def typed():
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(chat_command, "_stdin_is_terminal", lambda: True)
    monkeypatch.setattr("builtins.input", typed)
    result = invoke(chat_run, "--seed", "2", "--max-tokens", "5")
    assert result.exit_code == 0, result.output
    assert result.stdout == expected_answers(chat_run, ["Hello there"], 2, 5)[0] + "\n"
    assert result.stderr.count("you>") == 2 and "/reset starts over" in result.stderr


def test_ctrl_c_at_a_terminal_prompt_leaves_with_code_130(chat_run, monkeypatch):
    from nashcli.cli import chat as chat_command

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(chat_command, "_stdin_is_terminal", lambda: True)
    monkeypatch.setattr("builtins.input", interrupted)
    result = invoke(chat_run)
    assert result.exit_code == 130 and result.stdout == "" and "error" not in result.stderr
