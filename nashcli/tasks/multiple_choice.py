"""Multiple-choice tasks in HellaSwag's jsonl shape, scored as llm.c scores HellaSwag.

One JSON object per line: {"ctx": "A man is sitting on a roof. he", "endings": ["is using wrap to
wrap a pair of skis.", ...], "label": 3}; other keys are ignored. Each ending is scored as the
continuation of the context with a leading space; its score is the summed and the mean
cross-entropy of its own tokens. `acc` counts the examples whose labelled ending has the lowest sum,
`acc_norm` those whose labelled ending has the lowest mean (lower is better, the first wins a tie).

Every file is read as hostile: a line that breaks the shape is an error naming the file and line.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from nashcli.errors import NashError
from nashcli.tasks.base import ContinuationScore

MAX_FILE_BYTES = 1 << 29  # 512 MiB: HellaSwag's validation set is 11 MB
MAX_ENDINGS = 100


@dataclass(frozen=True)
class MultipleChoiceExample:
    context: str
    endings: tuple[str, ...]
    label: int  # index of the right ending


class MultipleChoiceTask:
    """A Task over multiple-choice examples: metrics acc and acc_norm."""

    metric_names = ("acc", "acc_norm")

    def __init__(self, name: str, examples: Sequence[MultipleChoiceExample], description: str):
        self.name, self.examples, self.description = name, list(examples), description

    def continuations(self, example: MultipleChoiceExample) -> list[tuple[str, str]]:
        return [(example.context, " " + ending) for ending in example.endings]

    def example_metrics(self, example: MultipleChoiceExample, scores: list[ContinuationScore]) -> dict[str, float]:
        sums = [score.loss_sum for score in scores]
        means = [score.loss_mean for score in scores]
        return {
            "acc": float(sums.index(min(sums)) == example.label),
            "acc_norm": float(means.index(min(means)) == example.label),
        }


def read_multiple_choice_file(
    path: Path, *, num_endings: Optional[int] = None, fix: str = "fix or delete that line"
) -> list[MultipleChoiceExample]:
    """All examples of a jsonl file, each checked; NashError naming the file and line otherwise.

    num_endings: the number every example must have (None: any from 2 to MAX_ENDINGS).
    fix: what the error tells the user to do about a broken line.
    """
    path = Path(path)
    if not path.is_file():
        raise NashError(f"no task file {path}: check the path")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise NashError(f"{path} is {size:,} bytes, more than a task file's {MAX_FILE_BYTES:,}: is it the right file?")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise NashError(f"{path} is not UTF-8 text: is it a jsonl file of examples?") from None
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        problem = None
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as error:
            problem = f"is not valid JSON ({getattr(error, 'msg', 'nested too deeply')})"
        else:
            example_or_problem = _parse_example(record, num_endings)
            if isinstance(example_or_problem, str):
                problem = example_or_problem
            else:
                examples.append(example_or_problem)
        if problem is not None:
            raise NashError(f"{path} line {number} {problem}: {fix}")
    if not examples:
        raise NashError(f"{path} holds no examples: each line should be a JSON object with ctx, endings and label")
    return examples


def _parse_example(record, num_endings: Optional[int]) -> "MultipleChoiceExample | str":
    """The example of one JSON line, or what is wrong with it."""
    if not isinstance(record, dict):
        return 'is not a JSON object with "ctx", "endings" and "label"'
    context, endings, label = record.get("ctx"), record.get("endings"), record.get("label")
    if not isinstance(context, str):
        return 'has no "ctx" string (the context the endings continue)'
    wanted = f"{num_endings}" if num_endings is not None else f"2 to {MAX_ENDINGS}"
    if not isinstance(endings, list) or not all(isinstance(ending, str) and ending.strip() for ending in endings):
        return f'has no "endings" list of {wanted} non-empty strings'
    if (num_endings is not None and len(endings) != num_endings) or not 2 <= len(endings) <= MAX_ENDINGS:
        return f'has {len(endings)} endings, not {wanted}'
    if isinstance(label, str) and label.isdigit():  # some copies store the label as text
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(endings):
        return f'has "label" {json.dumps(label)[:40]}, not the index of one of its {len(endings)} endings (0 to {len(endings) - 1})'
    return MultipleChoiceExample(context=context, endings=tuple(endings), label=label)


def file_task_name(path: "Path | str") -> str:
    """The metric prefix of a user's file: mc_<file stem>, e.g. mc:data/quiz.jsonl -> mc_quiz."""
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(path).stem).strip("_").lower()
    return f"mc_{stem or 'file'}"


def load(path: Path, *, limit: Optional[int] = None) -> MultipleChoiceTask:
    """The task of a user's multiple-choice jsonl (`mc:PATH`), its first `limit` examples."""
    examples = read_multiple_choice_file(path)
    chosen = examples[:limit]
    description = f"{file_task_name(path)}: {len(chosen):,} of {len(examples):,} examples from {path}"
    return MultipleChoiceTask(file_task_name(path), chosen, description)
