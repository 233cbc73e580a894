"""The interface every evaluation task implements, and the scores it gets back."""

from dataclasses import dataclass
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class ContinuationScore:
    """How well a model predicts a continuation's tokens after its context."""

    loss_sum: float  # summed cross-entropy (nats) over the continuation's scored tokens
    tokens: int  # scored tokens (all of the continuation's, unless truncation dropped its first ones)
    greedy: bool  # every scored token is the model's most likely next token

    @property
    def loss_mean(self) -> float:
        return self.loss_sum / self.tokens if self.tokens else float("inf")


class Task(Protocol):
    """A loaded task: its examples, and how each is turned into continuations and scored.

    The metrics of a task are means over its examples: `example_metrics` gives one example's values
    (e.g. {"acc": 1.0, "acc_norm": 0.0}), and the scorer averages them (summing first across
    processes). Metric names are logged as `<name>_<metric>`, e.g. hellaswag_acc_norm.
    """

    name: str  # the metric prefix: letters, digits and underscores
    description: str  # one line: what was loaded, from where, e.g. "hellaswag: 10,042 examples from ..."
    metric_names: tuple[str, ...]  # the keys of example_metrics, e.g. ("acc", "acc_norm")
    examples: Sequence[Any]  # validated when the task is loaded (the first train.eval_task_limit of them)

    def continuations(self, example: Any) -> list[tuple[str, str]]:
        """(context, continuation) texts whose continuation is scored given its context."""

    def example_metrics(self, example: Any, scores: list[ContinuationScore]) -> dict[str, float]:
        """One example's metric values from the scores of its continuations (in the same order)."""
