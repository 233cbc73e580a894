import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nashcli.config.models import ModelConfig
from nashcli.errors import NashError
from nashcli.model.gpt import GPT, count_parameters
from nashcli.model.hf import export_hf, load_hf_gpt2
from nashcli.model.sampling import generate_tokens

transformers = pytest.importorskip("transformers")

PROMPT = [5, 6, 7, 8]
NEW_TOKENS = 40


@pytest.fixture(scope="module")
def hf_model():
    """A random GPT2LMHeadModel, no download. initializer_range 0.2 (not 0.02) makes the logits
    sharp enough that greedy output moves between tokens instead of repeating one."""
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=300, n_positions=64,
        initializer_range=0.2, bos_token_id=None, eos_token_id=None,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    model.generation_config.pad_token_id = 0
    return model


@pytest.fixture
def hf_folder(hf_model, tmp_path) -> Path:
    folder = tmp_path / "hf-gpt2"
    hf_model.save_pretrained(folder)
    return folder


def load_nash(path_or_id) -> GPT:
    config, state_dict = load_hf_gpt2(str(path_or_id))
    model = GPT(config)
    model.load_state_dict(state_dict)
    return model.eval()


def hf_greedy(hf_model) -> list[int]:
    idx = torch.tensor([PROMPT])
    with torch.no_grad():
        output = hf_model.generate(
            idx, attention_mask=torch.ones_like(idx), max_new_tokens=NEW_TOKENS, do_sample=False
        )
    return output[0, len(PROMPT) :].tolist()


def assert_same_model(nash_model: GPT, hf_model) -> None:
    idx = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(nash_model(idx), hf_model(idx).logits, atol=1e-4, rtol=0)
    greedy = hf_greedy(hf_model)
    assert len(set(greedy)) > 3
    assert list(generate_tokens(nash_model, PROMPT, NEW_TOKENS, temperature=0)) == greedy


def test_imported_hf_model_gives_the_same_logits_and_greedy_tokens(hf_model, hf_folder):
    model = load_nash(hf_folder)
    assert model.config == ModelConfig(
        n_layers=2, n_heads=2, d_model=32, d_ff=128, vocab_size=300, max_seq_len=64, dropout=0.1
    )
    assert model.num_parameters() == hf_model.num_parameters()
    assert_same_model(model, hf_model)


def test_exported_model_loads_in_transformers_with_the_same_logits_and_greedy_tokens(tmp_path):
    torch.manual_seed(1)
    model = GPT(ModelConfig(n_layers=2, n_heads=2, d_model=32, d_ff=96, vocab_size=300, max_seq_len=64))
    with torch.no_grad():
        for parameter in model.parameters():  # trained-looking weights: sharper, biases non-zero
            parameter.add_(torch.randn_like(parameter) * 0.2)
        model.token_embedding.weight[300:] = 0.0
    model.eval()
    export_hf(model, tmp_path / "exported")
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["config.json", "model.safetensors"]
    assert load_file(tmp_path / "exported" / "model.safetensors")["transformer.wte.weight"].shape == (300, 32)
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    hf_model.generation_config.pad_token_id = 0
    assert hf_model.config.n_inner == 96
    assert hf_model.num_parameters() == model.num_parameters()
    assert_same_model(model, hf_model)


def test_pytorch_model_bin_is_loaded(hf_model, hf_folder):
    (hf_folder / "model.safetensors").unlink()
    torch.save(hf_model.state_dict(), hf_folder / "pytorch_model.bin")
    with torch.no_grad():
        idx = torch.tensor([PROMPT])
        torch.testing.assert_close(load_nash(hf_folder)(idx), hf_model(idx).logits, atol=1e-4, rtol=0)


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path("payload-ran"),))


def test_pytorch_model_bin_with_a_code_payload_is_refused(hf_folder, tmp_path):
    (hf_folder / "model.safetensors").unlink()
    (hf_folder / "pytorch_model.bin").write_bytes(pickle.dumps({"wte.weight": _RunsCode()}, protocol=2))
    with pytest.raises(NashError, match="cannot be loaded safely"):
        load_hf_gpt2(str(hf_folder))
    assert not (tmp_path / "payload-ran").exists()  # tests run inside tmp_path


def test_original_openai_key_names_load(hf_model, hf_folder):
    # openai-community/gpt2 stores keys without "transformer." and keeps the causal-mask buffers.
    path = hf_folder / "model.safetensors"
    tensors = {key.removeprefix("transformer."): tensor for key, tensor in load_file(path).items()}
    tensors.update({f"h.{layer}.attn.bias": torch.ones(1, 1, 64, 64) for layer in range(2)})
    save_file(tensors, path, metadata={"format": "pt"})
    with torch.no_grad():
        idx = torch.tensor([PROMPT])
        torch.testing.assert_close(load_nash(hf_folder)(idx), hf_model(idx).logits, atol=1e-4, rtol=0)


def test_hub_id_is_downloaded_with_snapshot_download(hf_folder, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(hf_folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    config, _ = load_hf_gpt2("openai-community/gpt2")
    assert config.n_layers == 2
    assert calls == [("openai-community/gpt2", ["config.json", "*.safetensors", "model.safetensors.index.json"])]


def test_failed_download_is_one_line_naming_the_fix(monkeypatch):
    import huggingface_hub

    def offline(repo_id, allow_patterns):
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your connection.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(NashError) as error:
        load_hf_gpt2("openai-community/gpt2")
    message = str(error.value)
    assert "\n" not in message
    assert "could not download hf:openai-community/gpt2 (We couldn't connect" in message
    assert "pass a local folder" in message


def test_a_path_that_is_neither_folder_nor_hub_id_is_refused():
    with pytest.raises(NashError, match="neither a folder nor a Hugging Face hub id"):
        load_hf_gpt2("./no/such/folder")


def test_a_config_nash_cannot_run_is_refused(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    (hf_folder / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(NashError, match="activation_function='relu' is not supported"):
        load_hf_gpt2(str(hf_folder))


def test_count_parameters_agrees_with_transformers_for_gpt2_124m_shape():
    with torch.device("meta"):
        reference = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    assert count_parameters(ModelConfig()) == reference.num_parameters() == 124_439_808


def test_sharded_safetensors_load(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    with torch.no_grad():
        idx = torch.tensor([PROMPT])
        torch.testing.assert_close(load_nash(tmp_path / "sharded")(idx), hf_model(idx).logits, atol=1e-4, rtol=0)


def test_export_refuses_in_one_line_the_options_gpt2_cannot_hold(tmp_path):
    config = ModelConfig(
        n_layers=1, n_heads=2, d_model=32, d_ff=64, vocab_size=300, max_seq_len=16,
        positions="rope", norm="rmsnorm", activation="relu2", qk_norm=True, tie_embeddings=False, bias=False,
    )
    with pytest.raises(NashError) as refusal:
        export_hf(GPT(config), tmp_path / "exported")
    message = str(refusal.value)
    assert "\n" not in message
    for key in ("positions=rope", "norm=rmsnorm", "activation=relu2", "qk_norm=True"):
        assert f"model.{key}" in message
    assert "tie_embeddings" not in message and "bias" not in message  # these GPT-2 can hold
    assert not (tmp_path / "exported").exists()


def test_an_untied_model_without_biases_exports_with_the_same_logits_and_imports_back(tmp_path):
    torch.manual_seed(1)
    options = dict(tie_embeddings=False, bias=False, zero_init_output=True)
    model = GPT(ModelConfig(n_layers=2, n_heads=2, d_model=32, d_ff=96, vocab_size=300, max_seq_len=64, **options))
    with torch.no_grad():
        for parameter in model.parameters():  # trained-looking weights; the padding rows stay zero
            parameter.add_(torch.randn_like(parameter) * 0.2)
        model.token_embedding.weight[300:] = 0.0
        model.lm_head[300:] = 0.0
    model.eval()
    export_hf(model, tmp_path / "exported")
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    hf_model.generation_config.pad_token_id = 0
    assert hf_model.config.tie_word_embeddings is False
    zero_biases = 2 * (3 * 32 + 32 + 96 + 32 + 2 * 32) + 32  # per layer qkv, out, up, down, two norms; ln_f
    assert hf_model.num_parameters() == model.num_parameters() + zero_biases
    assert_same_model(model, hf_model)
    imported = load_nash(tmp_path / "exported")
    assert imported.config.tie_embeddings is False and imported.config.bias  # biases come back as zeros
    assert torch.equal(imported.lm_head, model.lm_head)
    assert_same_model(imported, hf_model)
