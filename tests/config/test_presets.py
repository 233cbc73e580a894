import pytest
import yaml

from nashcli.config import resolve_config
from nashcli.config.presets import PRESETS_DIR, available_presets
from nashcli.errors import NashError


def test_the_four_presets_ship():
    assert {"tiny", "small", "gpt2-124m", "sft"} <= set(available_presets())


def leaves(tree: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.parametrize("name", available_presets())
def test_every_preset_validates_and_keeps_each_of_its_values(name):
    written = leaves(yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text(encoding="utf-8")))
    resolved = leaves(resolve_config(name, []).model_dump(mode="json"))
    assert written, f"preset {name} sets nothing"
    for key, value in written.items():
        # YAML 1.1 reads 6e-4 (no dot) as text; the config holds the number.
        expected = float(value) if isinstance(resolved[key], float) else value
        assert resolved[key] == expected, f"preset {name}: {key} is {resolved[key]!r}, the file says {value!r}"


def test_small_preset_shape():
    model = resolve_config("small", []).model
    assert (model.n_layers, model.n_heads, model.d_model, model.max_seq_len) == (4, 4, 256, 256)


def test_gpt2_preset_takes_half_a_million_tokens_a_step():
    config = resolve_config("gpt2-124m", [])
    assert config.tokens_per_step == 524288
    assert (config.train.lr, config.train.warmup_steps) == (6e-4, 700)
    assert config.train.min_lr == pytest.approx(0.1 * config.train.lr)


def test_preset_by_path(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  lr: 3.0e-4\n  max_steps: 10\n  warmup_steps: 0\n")
    assert resolve_config(str(path), []).train.lr == 3e-4


def test_missing_preset_lists_the_available_ones():
    with pytest.raises(NashError, match=r"unknown preset 'nope': available presets are .*small.*tiny"):
        resolve_config("nope", [])


def test_preset_with_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: [1\n")
    with pytest.raises(NashError, match="line 3"):
        resolve_config(str(path), [])


def test_unknown_key_in_a_preset_file_suggests_the_closest(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  warmup_step: 10\n")
    with pytest.raises(NashError, match=r"unknown config key 'train.warmup_step': did you mean 'train.warmup_steps'\?"):
        resolve_config(str(path), [])
