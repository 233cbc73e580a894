import json
from pathlib import Path

import pytest

from nashcli.config import NashConfig
from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout
from nashcli.runs.metrics import check_sinks, open_metrics, read_metrics


def test_every_record_lands_in_metrics_jsonl_with_its_step():
    layout = RunLayout(Path("runs/demo"))
    logger = open_metrics(layout, NashConfig(name="demo"))
    logger.log({"train_loss": 2.5, "lr": 1e-3}, step=1)
    logger.log({"val_loss": 2.75}, step=1)
    logger.close()
    assert read_metrics(layout.metrics_path) == [
        {"step": 1, "train_loss": 2.5, "lr": 1e-3},
        {"step": 1, "val_loss": 2.75},
    ]


def test_resume_drops_records_logged_after_the_checkpoint():
    layout = RunLayout(Path("runs/demo"))
    logger = open_metrics(layout, NashConfig(name="demo"))
    for step in range(1, 6):
        logger.log({"train_loss": float(step)}, step)
    logger.close()
    logger = open_metrics(layout, NashConfig(name="demo"), resume_step=3)
    logger.log({"train_loss": 40.0}, 4)
    logger.close()
    assert [record["step"] for record in read_metrics(layout.metrics_path)] == [1, 2, 3, 4]
    assert read_metrics(layout.metrics_path)[-1]["train_loss"] == 40.0


def test_a_torn_last_line_is_skipped_but_a_bad_middle_line_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "train_lo')
    assert read_metrics(path) == [{"step": 1}]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(NashError, match="line 2 is not valid JSON"):
        read_metrics(path)


def test_wandb_offline_writes_a_local_run_inside_the_run_folder(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the sink must choose offline itself
    config = NashConfig(name="demo")
    config.metrics.wandb = "offline"
    layout = RunLayout(Path("runs/demo"))
    logger = open_metrics(layout, config)
    logger.log({"train_loss": 2.5}, step=1)
    logger.close()
    offline_runs = list(layout.wandb_dir.glob("offline-run-*"))
    assert len(offline_runs) == 1
    run_id = (layout.wandb_dir / "nash_run_id").read_text()
    assert (offline_runs[0] / f"run-{run_id}.wandb").stat().st_size > 0
    assert json.loads(layout.metrics_path.read_text())["train_loss"] == 2.5


def test_wandb_online_without_credentials_is_an_error_not_a_prompt(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    config = NashConfig(name="demo")
    config.metrics.wandb = "online"
    with pytest.raises(NashError, match="metrics.wandb=online needs wandb credentials.*metrics.wandb=offline"):
        check_sinks(config)
