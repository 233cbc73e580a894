from typer.testing import CliRunner

from nashcli.cli.app import app
from nashcli.config import resolve_config
from nashcli.model.gpt import count_parameters

runner = CliRunner()


def test_dry_run_prints_the_parameter_count_and_trains_nothing():
    expected = count_parameters(resolve_config("tiny", []).model)
    assert expected == 6_846_080  # 2 layers, 128 wide, GPT-2 vocabulary: tied head counted once, no padding
    result = runner.invoke(app, ["train", "--preset", "tiny", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"{expected:,}" in result.output
    assert "n_layers: 2" in result.output
