"""`nash generate`: sample text from a trained model, streamed as it is produced.

The samples alone go to stdout (`nash generate ... > sample.txt` holds just the text); sample
headers and the timing line go to stderr.
"""

import codecs
import sys
import time
from typing import Annotated

import typer

from nashcli.cli.console import err_console
from nashcli.cli.model_options import (
    CheckpointOption,
    DeviceOption,
    SeedOption,
    SourceArgument,
    TemperatureOption,
    TopKOption,
    TopPOption,
)
from nashcli.errors import NashError


def command(
    source: SourceArgument,
    prompt: Annotated[str, typer.Option("--prompt", help="Text to continue; '-' reads it from stdin.")] = "\n",
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="New tokens per sample.")] = 200,
    temperature: TemperatureOption = 0.8,
    top_k: TopKOption = None,
    top_p: TopPOption = None,
    seed: SeedOption = None,
    num_samples: Annotated[int, typer.Option("--num-samples", min=1, help="How many samples to write.")] = 1,
    checkpoint: CheckpointOption = "best",
    stop_at_eot: Annotated[
        bool, typer.Option("--stop-at-eot/--no-stop-at-eot", help="Stop a sample at <|endoftext|>.")
    ] = True,
    device: DeviceOption = "auto",
) -> None:
    """Generate text with the KV cache, streaming tokens as they come.

    At the model's context length the window slides: the newest half of the context is kept and the
    cache rebuilt from it once, so long generations stay fast (learned positions cannot be shifted).

    Example: nash generate runs/demo --prompt "ROMEO:" --max-tokens 100 --seed 0
    """
    from nashcli.data.tokenizer import get_tokenizer
    from nashcli.engine.loading import load_model
    from nashcli.model.sampling import generate_tokens, seeded_generator

    if prompt == "-":
        prompt = sys.stdin.read()
    tokenizer = get_tokenizer()
    prompt_ids = tokenizer.encode(prompt)
    if not prompt_ids:
        raise NashError("the prompt is empty: pass --prompt TEXT (or --prompt - to read stdin)")
    model, _ = load_model(source, checkpoint=checkpoint, device=device)
    generator = seeded_generator(model, seed)

    produced, started = 0, time.perf_counter()
    for sample_index in range(num_samples):
        if num_samples > 1:
            err_console.print(f"[dim]── sample {sample_index + 1}/{num_samples} ──[/]")
        _write(prompt)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        tokens = generate_tokens(
            model,
            prompt_ids,
            max_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            stop_token=tokenizer.eot_token if stop_at_eot else None,
        )
        for token in tokens:
            produced += 1
            # A character can span two tokens: the incremental decoder holds back the partial bytes.
            _write(decoder.decode(tokenizer.decode_bytes([token])))
        _write(decoder.decode(b"", final=True) + "\n")
    elapsed_s = time.perf_counter() - started
    err_console.print(f"[dim]{produced} tokens in {elapsed_s:.1f} s, {produced / max(elapsed_s, 1e-9):.1f} tokens/s[/]")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()  # stream: each token shows as soon as it is sampled
