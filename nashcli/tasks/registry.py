"""Task names -> tasks: the names `nash eval --task` and train.eval_tasks accept.

Named tasks come from their modules (each has `load(task_file=, limit=, on_download=)`); `mc:PATH` is
a multiple-choice jsonl of the user's own. Kept free of heavy imports: the config validates names here.
"""

import importlib
from pathlib import Path
from typing import Optional

from nashcli.errors import NashError
from nashcli.tasks.base import Task
from nashcli.tasks import multiple_choice
from nashcli.tasks.multiple_choice import file_task_name

TASK_MODULES = {
    "hellaswag": "nashcli.tasks.hellaswag",
}
FILE_PREFIX = "mc:"


def task_names() -> list[str]:
    """What a task may be called: the named tasks, and mc:PATH."""
    return [*TASK_MODULES, f"{FILE_PREFIX}PATH"]


def check_task_name(spec: str) -> str:
    """The metric prefix of task `spec` (hellaswag -> hellaswag, mc:data/quiz.jsonl -> mc_quiz);
    ValueError, naming the known tasks, for an unknown name. Does not read any file."""
    if spec in TASK_MODULES:
        return spec
    if spec.startswith(FILE_PREFIX) and spec[len(FILE_PREFIX) :].strip():
        return file_task_name(spec[len(FILE_PREFIX) :])
    raise ValueError(f"unknown task {spec!r}: choose from {', '.join(task_names())}")


def load_task(
    spec: str, *, limit: Optional[int] = None, task_file: Optional[Path] = None, on_download=None
) -> Task:
    """Task `spec`, loaded and checked (its first `limit` examples); NashError with one line otherwise.

    task_file: a local copy of a named task's data instead of the cache. on_download(done, total):
    called as a download progresses (bytes).
    """
    try:
        check_task_name(spec)
    except ValueError as error:
        raise NashError(str(error)) from None
    if spec.startswith(FILE_PREFIX):
        if task_file is not None:
            raise NashError(f"--task {spec} names its file already: drop --task-file")
        return multiple_choice.load(Path(spec[len(FILE_PREFIX) :]), limit=limit)
    module = importlib.import_module(TASK_MODULES[spec])
    return module.load(task_file=task_file, limit=limit, on_download=on_download)
