import pytest

from nashcli.config import resolve_config
from nashcli.config.overrides import parse_override
from nashcli.errors import NashError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train.lr=1e-4", ("train.lr", 1e-4)),
        ("train.compile=true", ("train.compile", True)),
        ("train.betas=[0.9, 0.99]", ("train.betas", [0.9, 0.99])),
        ("model.n_layers=6", ("model.n_layers", 6)),
        ("name=my-run", ("name", "my-run")),
        ("data.dataset=", ("data.dataset", None)),
    ],
)
def test_values_are_parsed_as_yaml(text, expected):
    key, value = parse_override(text)
    assert (key, float(value) if key == "train.lr" else value) == expected


def test_overrides_apply_in_order_and_are_validated():
    config = resolve_config(
        "small",
        ["train.lr=1e-4", "model.dropout=0.1", "train.betas=[0.8, 0.9]", "train.lr=2e-4", "train.precision=fp32"],
    )
    assert config.train.lr == 2e-4
    assert config.model.dropout == 0.1
    assert config.train.betas == (0.8, 0.9)
    assert config.train.precision == "fp32"
    assert config.model.n_layers == 4  # untouched preset value


def test_unknown_key_suggests_the_closest():
    with pytest.raises(NashError, match=r"unknown config key 'train.lrr': did you mean 'train.lr'\?"):
        resolve_config("tiny", ["train.lrr=3"])


def test_unknown_section_suggests_the_closest():
    with pytest.raises(NashError, match=r"did you mean 'model.n_layers'\?"):
        resolve_config(None, ["modle.n_layers=3"])


def test_hopeless_key_lists_the_valid_ones():
    with pytest.raises(NashError, match=r"valid keys here are train.batch_size, train.lr"):
        resolve_config(None, ["train.zzzzzz=3"])


def test_value_key_used_as_section_is_refused():
    with pytest.raises(NashError, match="'train.lr' is a value, not a section"):
        resolve_config(None, ["train.lr.x=3"])


def test_missing_equals_sign():
    with pytest.raises(NashError, match="expected KEY=VALUE"):
        parse_override("train.lr")


def test_wrong_type_names_key_value_and_rule():
    with pytest.raises(NashError, match=r"train.max_steps='abc': Input should be a valid integer"):
        resolve_config(None, ["train.max_steps=abc"])


def test_out_of_range_names_key_value_and_rule():
    with pytest.raises(NashError, match=r"train.lr=-1: Input should be greater than 0"):
        resolve_config(None, ["train.lr=-1"])


def test_list_item_out_of_range_names_its_index():
    with pytest.raises(NashError, match=r"train.betas\[1\]=2: Input should be less than 1"):
        resolve_config(None, ["train.betas=[0.9, 2]"])


def test_heads_not_dividing_width():
    with pytest.raises(NashError, match=r"model.d_model \(128\) must be divisible by model.n_heads \(3\)"):
        resolve_config("tiny", ["model.n_heads=3"])
