"""Multiple-choice files are hostile input: every broken line is one error naming the file and line."""

import json

import pytest

from nashcli.errors import NashError
from nashcli.tasks.multiple_choice import MultipleChoiceExample, file_task_name, read_multiple_choice_file
from nashcli.tasks.registry import load_task
from tests.tasks.files import hellaswag_records, write_jsonl

GOOD = {"ctx": "A man sits on a roof. he", "endings": ["is up.", "is down.", "sings.", "naps."], "label": 2}


def write_lines(tmp_path, *lines) -> str:
    path = tmp_path / "quiz.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_a_file_in_hellaswag_shape_reads_with_its_labels(tmp_path):
    path = write_jsonl(tmp_path / "quiz.jsonl", hellaswag_records(5) + [{**GOOD, "label": "1"}])
    examples = read_multiple_choice_file(path, num_endings=4)
    assert len(examples) == 6
    assert examples[-1] == MultipleChoiceExample(GOOD["ctx"], tuple(GOOD["endings"]), 1)
    assert examples[0].context == hellaswag_records(5)[0]["ctx"]


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"ctx": "x", "endings": ["a", "b"', "is not valid JSON"),
        ("[1, 2, 3]", 'is not a JSON object with "ctx", "endings" and "label"'),
        (json.dumps({**GOOD, "ctx": None}), 'has no "ctx" string'),
        (json.dumps({**GOOD, "endings": "one, two"}), 'has no "endings" list of 2 to 100 non-empty strings'),
        (json.dumps({**GOOD, "endings": ["a", " ", "c"]}), 'has no "endings" list'),
        (json.dumps({**GOOD, "endings": ["only one"], "label": 0}), "has 1 endings, not 2 to 100"),
        (json.dumps({**GOOD, "label": 4}), 'has "label" 4, not the index of one of its 4 endings (0 to 3)'),
        (json.dumps({**GOOD, "label": -1}), 'has "label" -1'),
        (json.dumps({**GOOD, "label": True}), 'has "label" true'),
        (json.dumps({**GOOD, "label": 1.0}), 'has "label" 1.0'),
        (json.dumps({key: value for key, value in GOOD.items() if key != "label"}), 'has "label" null'),
    ],
)
def test_a_broken_line_is_one_error_naming_the_file_and_line(tmp_path, line, problem):
    path = write_lines(tmp_path, json.dumps(GOOD), "", line, json.dumps(GOOD))
    with pytest.raises(NashError) as raised:
        read_multiple_choice_file(path)
    message = str(raised.value)
    assert message.startswith(f"{path} line 3 {problem}") and message.endswith(": fix or delete that line")
    assert "\n" not in message


def test_hellaswag_files_need_exactly_four_endings(tmp_path):
    path = write_lines(tmp_path, json.dumps(GOOD), json.dumps({**GOOD, "endings": ["a", "b", "c"], "label": 0}))
    with pytest.raises(NashError, match=r"quiz.jsonl line 2 has 3 endings, not 4: fix or delete that line$"):
        load_task("hellaswag", task_file=path)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "holds no examples"),
        (b"\n  \n", "holds no examples"),
        (b'{"ctx": "caf\xe9"}\n', "is not UTF-8 text"),
    ],
)
def test_an_empty_or_binary_file_is_refused(tmp_path, content, problem):
    path = tmp_path / "quiz.jsonl"
    path.write_bytes(content)
    with pytest.raises(NashError, match=problem):
        read_multiple_choice_file(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(NashError, match=r"^no task file missing.jsonl: check the path$"):
        load_task("mc:missing.jsonl")


def test_a_users_file_loads_its_first_examples_under_its_own_name(tmp_path):
    path = write_jsonl(tmp_path / "My Quiz-2.jsonl", hellaswag_records(7))
    task = load_task(f"mc:{path}", limit=3)
    assert task.name == file_task_name(path) == "mc_my_quiz_2"
    assert len(task.examples) == 3 and task.metric_names == ("acc", "acc_norm")
    assert task.description == f"mc_my_quiz_2: 3 of 7 examples from {path}"
    assert task.continuations(task.examples[0])[1] == (task.examples[0].context, " " + task.examples[0].endings[1])
