"""Task names: the ones the config and `nash eval --task` accept."""

import pytest

from nashcli.errors import NashError
from nashcli.tasks import hellaswag
from nashcli.tasks.registry import TASK_MODULES, check_task_name, load_task, task_names


def test_every_registered_task_module_has_a_loader_and_its_name():
    import importlib

    for name, module_name in TASK_MODULES.items():
        module = importlib.import_module(module_name)
        assert callable(module.load) and module.NAME == name


def test_names_give_their_metric_prefix():
    assert check_task_name("hellaswag") == "hellaswag"
    assert check_task_name("mc:data/quiz.v2.jsonl") == "mc_quiz_v2"
    assert task_names() == ["hellaswag", "mc:PATH"]


@pytest.mark.parametrize("name", ["lambada", "HellaSwag", "mc:", "mc:  ", ""])
def test_an_unknown_name_lists_the_known_ones(name):
    with pytest.raises(ValueError, match=r"unknown task .*: choose from hellaswag, mc:PATH$"):
        check_task_name(name)
    with pytest.raises(NashError, match=r"unknown task"):
        load_task(name)


def test_a_task_file_goes_with_a_named_task_only(tmp_path):
    with pytest.raises(NashError, match=r"^--task mc:quiz.jsonl names its file already: drop --task-file$"):
        load_task("mc:quiz.jsonl", task_file=tmp_path / "other.jsonl")


def test_hellaswag_is_the_file_llm_c_downloads():
    assert hellaswag.URL == "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
    assert hellaswag.NUM_EXAMPLES == 10_042
