"""GPT-2 weights in the Hugging Face format, in and out.

Hugging Face stores GPT-2's linear layers as `Conv1D`, weights shaped (in, out); nash's
InOutLinear uses the same layout, so weights only change names. A tied LM head is stored once, as
the token embedding; an untied one as `lm_head.weight` with `tie_word_embeddings: false`. nash's
embedding and head carry extra zero rows up to `padded_vocab_size`, added on import and dropped on
export. A model without biases exports them as zeros, which computes the same.
"""

import json
import re
from pathlib import Path
from typing import Callable

import torch

from nashcli.config.models import ModelConfig
from nashcli.errors import NashError
from nashcli.model.gpt import GPT
from nashcli.model.layers import NORM_EPS
from nashcli.tensor_files import TensorSpec, read_safetensors, save_safetensors

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"  # sharded checkpoints (large models)
PYTORCH_FILE = "pytorch_model.bin"
LAYER_NORM_EPS = NORM_EPS
# The model options GPT-2's format holds only at these values (GPT-2's own). The others export:
# zero_init_output only changes the initial weights, tie_embeddings has its key in config.json, and
# missing biases are zero biases.
GPT2_OPTIONS = {"positions": "learned", "norm": "layernorm", "activation": "gelu", "qk_norm": False}

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
UNTIED_HEAD_KEYS = ("lm_head", "lm_head.weight")  # outside GPT2LMHeadModel's "transformer." prefix
VOCAB_ROWS_KEYS = ("token_embedding.weight", "lm_head")  # (padded V, C) in nash, (V, C) in the file
HUB_ID_PATTERN = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")  # weights in any of these are read as fp32
DAMAGED_FIX = "download or export the weights again"


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
    hf_tensors = _read_weights(folder, _hf_shapes(config))
    return config, _to_nash_state_dict(hf_tensors, config, folder)


def export_hf(model: GPT, out_dir: Path) -> None:
    """Write config.json and model.safetensors into `out_dir` (created) so that
    `transformers.GPT2LMHeadModel.from_pretrained(out_dir)` loads the model. A model with options
    GPT-2 does not have is refused before anything is written."""
    config = model.config
    _check_gpt2_options(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    tensors = {}
    for nash_key, hf_key in _key_pairs(config):
        if nash_key in state:
            tensor = state[nash_key].detach().to("cpu", torch.float32)
        else:  # a bias of a model without biases: as wide as the weight's output
            tensor = torch.zeros(state[nash_key.removesuffix("bias") + "weight"].shape[-1])
        if nash_key in VOCAB_ROWS_KEYS:
            tensor = tensor[: config.vocab_size]
        file_key = hf_key if hf_key == UNTIED_HEAD_KEYS[1] else f"transformer.{hf_key}"
        tensors[file_key] = tensor.contiguous()
    save_safetensors(tensors, out_dir / SAFETENSORS_FILE, metadata={"format": "pt"})  # transformers checks "pt"
    (out_dir / CONFIG_FILE).write_text(json.dumps(_hf_config(config), indent=2) + "\n", encoding="utf-8")


def _check_gpt2_options(config: ModelConfig) -> None:
    """Refuse, in one line naming them all, the options GPT-2's format cannot hold."""
    values = {key: getattr(config, key) for key in GPT2_OPTIONS}
    held_not = [f"model.{key}={value}" for key, value in values.items() if value != GPT2_OPTIONS[key]]
    if held_not:
        raise NashError(
            f"the Hugging Face GPT-2 format cannot hold {', '.join(held_not)}: only models with GPT-2's values "
            "of these keys can be exported"
        )


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
            tie_embeddings=hf.get("tie_word_embeddings", True),
        )
    except (KeyError, ValueError) as error:
        raise NashError(f"{path} is not a usable GPT-2 config ({error})") from None


def _hf_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Hugging Face key -> the shape GPT-2 of `config` stores it in: nash's, without the padding
    rows of the token embedding and head."""
    with torch.device("meta"):  # shapes only: no memory is allocated, nothing computed
        nash_state = GPT(config).state_dict()
    shapes = {}
    for nash_key, hf_key in _key_pairs(config):
        rows = (config.vocab_size,) if nash_key in VOCAB_ROWS_KEYS else ()
        shapes[hf_key] = rows + tuple(nash_state[nash_key].shape)[len(rows) :]
    return shapes


def _read_weights(folder: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The weights named in `shapes` (Hugging Face keys), each checked before it is read."""
    if (folder / SAFETENSORS_FILE).is_file():
        return _read_safetensors_weights([folder / SAFETENSORS_FILE], shapes)
    if (folder / SAFETENSORS_INDEX_FILE).is_file():
        return _read_safetensors_weights(_shard_paths(folder / SAFETENSORS_INDEX_FILE), shapes)
    path = folder / PYTORCH_FILE
    if path.is_file():
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # refused pickled code, or a damaged file failing inside the reader
            raise NashError(
                f"{path} cannot be loaded safely ({type(error).__name__}): use weights in model.safetensors instead"
            ) from None
        if not isinstance(loaded, dict):
            raise NashError(f"{path} holds a {type(loaded).__name__}, not a dict of weights: {DAMAGED_FIX}")
        tensors = {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
        specs = {key: TensorSpec.of(tensor) for key, tensor in tensors.items() if isinstance(key, str)}
        return _pick_weights(path, specs, shapes, tensors.__getitem__)
    raise NashError(f"{folder} has no {SAFETENSORS_FILE} or {PYTORCH_FILE}: it is not a Hugging Face GPT-2 folder")


def _read_safetensors_weights(paths: list[Path], shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in paths:
        with read_safetensors(path, DAMAGED_FIX) as stored:
            tensors.update(_pick_weights(path, stored.specs, shapes, stored.load))
    return tensors


def _pick_weights(
    path: Path, specs: dict[str, TensorSpec], shapes: dict[str, tuple[int, ...]], load: Callable[[str], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The weights of `shapes` among one file's `specs`, each checked before `load` reads it.

    Checkpoints saved from GPT2LMHeadModel prefix keys with "transformer."; the original OpenAI
    conversion (openai-community/gpt2) does not. Other tensors (causal-mask buffers) are not read.
    """
    picked = {}
    for stored_key, spec in specs.items():
        key = stored_key.removeprefix("transformer.")
        if key not in shapes:
            continue
        if spec.dtype not in FLOAT_DTYPES or spec.shape != shapes[key]:
            raise NashError(
                f"{path}: {stored_key} is {spec} where GPT-2 of its config.json has a float tensor of shape "
                f"{list(shapes[key])}: the weights and config.json disagree, or the file is damaged"
            )
        picked[key] = load(stored_key)
    return picked


def _shard_paths(index_path: Path) -> list[Path]:
    """The shard files a sharded checkpoint's index names: plain file names inside its folder."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise NashError(f"cannot read {index_path} ({error}): {DAMAGED_FIX}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(name, str) and name == Path(name).name and name.endswith(".safetensors")
        for name in weight_map.values()
    ):
        raise NashError(f"{index_path} needs a 'weight_map' of .safetensors file names in its folder: {DAMAGED_FIX}")
    return [index_path.parent / name for name in sorted(set(weight_map.values()))]


def _to_nash_state_dict(hf_tensors: dict, config: ModelConfig, folder: Path) -> dict[str, torch.Tensor]:
    state = {}
    padding = torch.zeros(config.padded_vocab_size - config.vocab_size, config.d_model)
    for nash_key, hf_key in _key_pairs(config):
        if hf_key not in hf_tensors:
            raise NashError(f"{folder} lacks the weight {hf_key}: is it a GPT-2 checkpoint of this config?")
        state[nash_key] = hf_tensors[hf_key].to(torch.float32).contiguous()
        if nash_key in VOCAB_ROWS_KEYS:
            state[nash_key] = torch.cat([state[nash_key], padding])
    return state


def _key_pairs(config: ModelConfig) -> list[tuple[str, str]]:
    """(nash key, Hugging Face key) of every weight GPT-2 of `config` stores, biases included."""
    pairs = list(MODEL_KEYS.items())
    for layer in range(config.n_layers):
        pairs += [(f"blocks.{layer}.{nash}", f"h.{layer}.{hf}") for nash, hf in LAYER_KEYS.items()]
    return pairs if config.tie_embeddings else pairs + [UNTIED_HEAD_KEYS]


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
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": end_of_text if has_end_of_text else None,
        "eos_token_id": end_of_text if has_end_of_text else None,
    }
