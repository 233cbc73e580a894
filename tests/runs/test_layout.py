from datetime import datetime
from pathlib import Path

import pytest

from nashcli.config import NashConfig
from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout, default_run_name


def test_paths_follow_the_documented_layout():
    layout = RunLayout.for_config(NashConfig(name="demo", runs_dir=Path("out")))
    assert layout.root == Path("out/demo")
    assert layout.config_path == Path("out/demo/config.yaml")
    assert layout.metrics_path == Path("out/demo/metrics.jsonl")
    assert layout.summary_path == Path("out/demo/summary.json")
    assert layout.checkpoint_dir("best") == Path("out/demo/checkpoints/best")
    assert layout.checkpoint_dir(RunLayout.step_checkpoint_name(500)) == Path("out/demo/checkpoints/step_000500")


def test_config_round_trips_through_config_yaml():
    config = NashConfig(name="demo")
    config.train.lr = 3e-4
    layout = RunLayout.for_config(config)
    layout.write_config(config)
    assert layout.read_config() == config


def test_find_resolves_a_folder_or_a_name_and_lists_runs_when_missing():
    RunLayout(Path("runs/alpha")).write_config(NashConfig(name="alpha"))
    assert RunLayout.find("alpha").root == Path("runs/alpha")
    assert RunLayout.find("runs/alpha").root == Path("runs/alpha")
    with pytest.raises(NashError, match="no run 'beta'.*runs in runs/: alpha"):
        RunLayout.find("beta")


def test_default_names_use_the_preset_stem_and_a_timestamp_and_never_collide():
    now = datetime(2024, 6, 1, 12, 30, 5)
    assert default_run_name("small", now=now) == "small-20240601-123005"
    assert default_run_name("experiments/my exp.yaml", now=now) == "my-exp-20240601-123005"
    Path("runs/small-20240601-123005").mkdir(parents=True)
    assert default_run_name("small", now=now) == "small-20240601-123005-2"
    assert NashConfig(name=default_run_name(None, now=now)).name == "run-20240601-123005"
