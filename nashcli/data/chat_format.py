"""The chat format: how a conversation becomes the text a model reads. SFT trains on it and `nash chat`
talks in it; this module is its one definition, so the two cannot drift apart.

A conversation is a list of messages `{"role": system|user|assistant, "content": text}`. Each message
is a marker line naming its role, then its content and a newline; the text the model continues with
its answer ends with the assistant marker:

    <|system|>\\nYou are terse.\\n<|user|>\\nCapital of France?\\n<|assistant|>\\n

The answer follows the marker and ends with the tokenizer's end-of-text token (id 50256, the token,
not the text "<|endoftext|>"): that is what SFT trains the model to produce after a completion, and
what ends an answer in `nash chat`. An earlier answer, inside a later prompt, is rendered like any
message (content, newline), without the end token. The markers are ordinary text to the GPT-2
tokenizer, not special tokens.
"""

from nashcli.data.tokenizer import Tokenizer

CHAT_ROLES = ("system", "user", "assistant")


def role_marker(role: str) -> str:
    """The line that opens a message of `role`: "<|user|>\\n"."""
    return f"<|{role}|>\n"


def render_message(message: dict) -> str:
    """One message as the model reads it: its role marker, its content, a newline."""
    return role_marker(message["role"]) + message["content"] + "\n"


def render_prompt(history: list[dict]) -> str:
    """The text the model continues with the next answer: every message of `history`, then the
    assistant marker.

    Example: render_prompt([{"role": "user", "content": "Hi"}]) == "<|user|>\\nHi\\n<|assistant|>\\n"
    """
    return "".join(render_message(message) for message in history) + role_marker("assistant")


def render_chat_prompt(messages: list[dict]) -> str:
    """The prompt of an SFT chat example: all messages but the last (the completion to learn),
    ending with the assistant marker."""
    return render_prompt(messages[:-1])


def answer_end_token(tokenizer: Tokenizer) -> int:
    """The token that ends an answer: every SFT completion is trained to end with it, and `nash chat`
    stops an answer when the model produces it."""
    return tokenizer.eot_token
