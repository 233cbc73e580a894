"""GPT-2 weights in the Hugging Face format, in and out.

Hugging Face stores GPT-2's linear layers as `Conv1D`, weights shaped (in, out); nash's
InOutLinear uses the same layout, so weights only change names. The tied LM head is stored once,
as the token embedding; nash's embedding carries extra zero rows up to `padded_vocab_size`, added
on import and dropped on export.
"""

import json
import pickle
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from nashcli.config.models import ModelConfig
from nashcli.errors import NashError
from nashcli.model.gpt import GPT

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"  # sharded checkpoints (large models)
PYTORCH_FILE = "pytorch_model.bin"
LAYER_NORM_EPS = 1e-5  # what nash's nn.LayerNorm uses

# nash name -> Hugging Face name, per layer ({} is the layer index) and for the whole model.
LAYER_KEYS = {
    "attention_norm.weight": "ln_1.weight",
    "attention_norm.bias": "ln_1.bias",
    "attention.qkv.weight": "attn.c_attn.weight",
    "attention.qkv.bias": "attn.c_attn.bias",
    "attention.out_proj.weight": "attn.c_proj.weight",
    "attention.out_proj.bias": "attn.c_proj.bias",
    "mlp_norm.weight": "ln_2.weight",
    "mlp_norm.bias": "ln_2.bias",
    "mlp.up.weight": "mlp.c_fc.weight",
    "mlp.up.bias": "mlp.c_fc.bias",
    "mlp.down.weight": "mlp.c_proj.weight",
    "mlp.down.bias": "mlp.c_proj.bias",
}
MODEL_KEYS = {
    "token_embedding.weight": "wte.weight",
    "position_embedding.weight": "wpe.weight",
    "final_norm.weight": "ln_f.weight",
    "final_norm.bias": "ln_f.bias",
}
HUB_ID_PATTERN = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def load_hf_gpt2(path_or_id: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(ModelConfig, nash state_dict) from a Hugging Face GPT-2 checkpoint: a local folder with
    config.json and model.safetensors (or a sharded index, or pytorch_model.bin), or a hub id such
    as `openai-community/gpt2`, downloaded once into the Hugging Face cache.

    pytorch_model.bin is read with torch.load(weights_only=True), which refuses pickled code.

    Example:
        config, state_dict = load_hf_gpt2("openai-community/gpt2")
        model = GPT(config); model.load_state_dict(state_dict)
    """
    folder = _local_folder(path_or_id)
    config = _model_config(folder)
    hf_tensors = _read_weights(folder)
    return config, _to_nash_state_dict(hf_tensors, config, folder)


def export_hf(model: GPT, out_dir: Path) -> None:
    """Write config.json and model.safetensors into `out_dir` (created) so that
    `transformers.GPT2LMHeadModel.from_pretrained(out_dir)` loads the model."""
    config = model.config
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    tensors = {}
    for nash_key, hf_key in _key_pairs(config.n_layers):
        tensor = state[nash_key].detach().to("cpu", torch.float32)
        if nash_key == "token_embedding.weight":
            tensor = tensor[: config.vocab_size]
        tensors[f"transformer.{hf_key}"] = tensor.contiguous()
    save_file(tensors, out_dir / SAFETENSORS_FILE, metadata={"format": "pt"})  # transformers checks "pt"
    (out_dir / CONFIG_FILE).write_text(json.dumps(_hf_config(config), indent=2) + "\n", encoding="utf-8")


def _local_folder(path_or_id: str) -> Path:
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not HUB_ID_PATTERN.match(path_or_id):
        raise NashError(f"hf:{path_or_id} is neither a folder nor a Hugging Face hub id like openai-community/gpt2")
    return _download(path_or_id)


def _download(repo_id: str) -> Path:
    """The hub snapshot's folder: config and safetensors weights, else the pickle-format weights."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(repo_id, allow_patterns=[CONFIG_FILE, "*.safetensors", SAFETENSORS_INDEX_FILE])
        )
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=[CONFIG_FILE, PYTORCH_FILE]))
    except (OSError, ValueError) as error:  # hub HTTP and offline errors are OSErrors, bad ids ValueErrors
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NashError(
            f"could not download hf:{repo_id} ({first_line}): check the id and the network, "
            "or pass a local folder with config.json and model.safetensors"
        ) from None
    return folder


def _model_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG_FILE
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise NashError(f"cannot read {path} ({error}): a Hugging Face GPT-2 folder needs its config.json") from None
    if hf.get("model_type", "gpt2") != "gpt2":
        raise NashError(f"{path} describes a {hf['model_type']!r} model: only GPT-2 weights can be loaded")
    # Options that change the computation away from the GPT-2 architecture nash implements.
    unsupported = {
        "activation_function": (hf.get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh")),
        "scale_attn_weights": (hf.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "layer_norm_epsilon": (hf.get("layer_norm_epsilon", LAYER_NORM_EPS), (LAYER_NORM_EPS,)),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", True), (True,)),  # nash's LM head is the embedding
    }
    for key, (value, supported) in unsupported.items():
        if value not in supported:
            raise NashError(f"{path}: {key}={value!r} is not supported (nash implements {supported[0]!r})")
    try:
        return ModelConfig(
            n_layers=hf["n_layer"],
            n_heads=hf["n_head"],
            d_model=hf["n_embd"],
            d_ff=hf.get("n_inner") or 4 * hf["n_embd"],  # None means GPT-2's 4 x width
            vocab_size=hf["vocab_size"],
            max_seq_len=hf.get("n_positions", hf.get("n_ctx")),
            dropout=hf.get("resid_pdrop", 0.0),
        )
    except (KeyError, ValueError) as error:
        raise NashError(f"{path} is not a usable GPT-2 config ({error})") from None


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / SAFETENSORS_FILE).is_file():
        return load_file(folder / SAFETENSORS_FILE)
    if (folder / SAFETENSORS_INDEX_FILE).is_file():
        index = json.loads((folder / SAFETENSORS_INDEX_FILE).read_text(encoding="utf-8"))
        tensors = {}
        for shard in sorted(set(index["weight_map"].values())):
            tensors.update(load_file(folder / shard))
        return tensors
    if (folder / PYTORCH_FILE).is_file():
        try:
            return torch.load(folder / PYTORCH_FILE, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
            raise NashError(
                f"{folder / PYTORCH_FILE} cannot be loaded safely ({type(error).__name__}): "
                "use weights in model.safetensors instead"
            ) from None
    raise NashError(f"{folder} has no {SAFETENSORS_FILE} or {PYTORCH_FILE}: it is not a Hugging Face GPT-2 folder")


def _to_nash_state_dict(hf_tensors: dict, config: ModelConfig, folder: Path) -> dict[str, torch.Tensor]:
    # Checkpoints saved from GPT2LMHeadModel prefix keys with "transformer."; the original OpenAI
    # conversion (openai-community/gpt2) does not. Causal-mask buffers (attn.bias) are not weights.
    hf_tensors = {key.removeprefix("transformer."): tensor for key, tensor in hf_tensors.items()}
    state = {}
    for nash_key, hf_key in _key_pairs(config.n_layers):
        if hf_key not in hf_tensors:
            raise NashError(f"{folder} lacks the weight {hf_key}: is it a GPT-2 checkpoint of this config?")
        state[nash_key] = hf_tensors[hf_key].to(torch.float32).contiguous()
    padding = torch.zeros(config.padded_vocab_size - config.vocab_size, config.d_model)
    state["token_embedding.weight"] = torch.cat([state["token_embedding.weight"], padding])
    return state


def _key_pairs(n_layers: int) -> list[tuple[str, str]]:
    pairs = list(MODEL_KEYS.items())
    for layer in range(n_layers):
        pairs += [(f"blocks.{layer}.{nash}", f"h.{layer}.{hf}") for nash, hf in LAYER_KEYS.items()]
    return pairs


def _hf_config(config: ModelConfig) -> dict:
    end_of_text = 50256  # GPT-2's <|endoftext|>, when the vocabulary has it
    has_end_of_text = config.vocab_size > end_of_text
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.max_seq_len,
        "n_embd": config.d_model,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": config.d_ff,
        "activation_function": "gelu_new",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "bos_token_id": end_of_text if has_end_of_text else None,
        "eos_token_id": end_of_text if has_end_of_text else None,
    }
