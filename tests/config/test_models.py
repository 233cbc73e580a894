import pytest
from pydantic import ValidationError

from nashcli.config.models import ModelConfig, NashConfig, TrainConfig


def test_defaults_are_gpt2_124m():
    model = NashConfig().model
    assert (model.n_layers, model.n_heads, model.d_model, model.d_ff) == (12, 12, 768, 3072)
    assert (model.vocab_size, model.max_seq_len) == (50257, 1024)


def test_architecture_options_default_to_gpt2():
    model = ModelConfig()
    assert (model.positions, model.norm, model.activation) == ("learned", "layernorm", "gelu")
    assert (model.qk_norm, model.tie_embeddings, model.bias, model.zero_init_output) == (False, True, True, False)


def test_an_unknown_option_value_is_refused():
    with pytest.raises(ValidationError, match="'learned' or 'rope'"):
        ModelConfig(positions="alibi")


def test_rope_needs_an_even_head_width():
    with pytest.raises(ValidationError, match="must be even"):
        ModelConfig(d_model=36, n_heads=4, positions="rope")
    assert ModelConfig(d_model=36, n_heads=4).head_dim == 9  # learned positions take any width


def test_padded_vocab_rounds_up_to_the_multiple():
    assert ModelConfig().padded_vocab_size == 50304
    assert ModelConfig(vocab_size=64, vocab_pad_multiple=64).padded_vocab_size == 64
    assert ModelConfig(vocab_size=65, vocab_pad_multiple=64).padded_vocab_size == 128


def test_width_must_divide_into_heads():
    with pytest.raises(ValidationError, match="divisible"):
        ModelConfig(d_model=100, n_heads=3)


def test_unknown_field_is_refused():
    with pytest.raises(ValidationError, match="extra"):
        TrainConfig(lrr=1.0)


def test_min_lr_above_lr_is_refused():
    with pytest.raises(ValidationError, match="min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)


def test_pretrain_and_sft_sources_are_exclusive():
    with pytest.raises(ValidationError, match="either data.dataset"):
        NashConfig.model_validate({"data": {"dataset": "shakespeare", "sft_file": "x.jsonl"}})


def test_every_field_has_a_description():
    from pydantic import BaseModel

    def check(model: type[BaseModel]):
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                check(annotation)
            else:
                assert field.description, f"{model.__name__}.{name} has no description"

    check(NashConfig)


def test_tokens_per_step():
    config = NashConfig.model_validate(
        {"model": {"max_seq_len": 1024}, "train": {"batch_size": 16, "grad_accum_steps": 32}}
    )
    assert config.tokens_per_step == 524288


def test_eval_tasks_must_be_known_tasks_or_files_without_reading_them():
    assert TrainConfig(eval_tasks=["hellaswag", "mc:data/quiz.jsonl"]).eval_tasks == ["hellaswag", "mc:data/quiz.jsonl"]
    with pytest.raises(ValidationError, match=r"unknown task 'lambada': choose from hellaswag, mc:PATH"):
        TrainConfig(eval_tasks=["lambada"])
    with pytest.raises(ValidationError, match=r"'mc:a/quiz.jsonl' and 'mc:b/quiz.jsonl' would both log mc_quiz_\*"):
        TrainConfig(eval_tasks=["mc:a/quiz.jsonl", "mc:b/quiz.jsonl"])
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        TrainConfig(eval_task_limit=0)
