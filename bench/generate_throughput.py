"""Batch-1 generation speed of nash against Hugging Face `transformers` `generate`, same weights.

A randomly initialised GPT-2-shaped `GPT2LMHeadModel` (vocabulary 50257) is saved in the Hugging
Face format and imported into nash with `load_hf_gpt2`, so both run identical weights. From one
16-token prompt each produces 200 new tokens greedily, alternating within each round so that
machine noise hits all alike:
  nash        generate_tokens with the KV cache
  nash-nc     generate_tokens without the cache (a full forward over the window per token)
  hf          GPT2LMHeadModel.generate(do_sample=False, use_cache=True)
Prints tokens/s per round, the medians and the median per-round ratios (target: nash / hf >= 1.5),
and checks that all three produce the same tokens.

    python bench/generate_throughput.py [--shapes 6x384,12x768] [--rounds 3] [--no-uncached]
"""

import argparse
import statistics
import tempfile
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as transformers_logging

from nashcli.model.gpt import GPT
from nashcli.model.hf import load_hf_gpt2
from nashcli.model.sampling import generate_tokens

VOCAB_SIZE = 50257
CONTEXT = 1024


def build_models(n_layers: int, d_model: int, seed: int) -> tuple[GPT, GPT2LMHeadModel]:
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=n_layers, n_head=d_model // 64, n_embd=d_model, vocab_size=VOCAB_SIZE, n_positions=CONTEXT
    )
    reference = GPT2LMHeadModel(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        model_config, state_dict = load_hf_gpt2(folder)
    model = GPT(model_config)
    model.load_state_dict(state_dict)
    return model.eval(), reference


def run_nash(model: GPT, prompt: list[int], new_tokens: int, use_cache: bool) -> tuple[list[int], float]:
    started = time.perf_counter()
    tokens = list(generate_tokens(model, prompt, new_tokens, temperature=0, use_cache=use_cache))
    return tokens, time.perf_counter() - started


@torch.inference_mode()
def run_reference(reference: GPT2LMHeadModel, prompt: list[int], new_tokens: int) -> tuple[list[int], float]:
    idx = torch.tensor([prompt])
    started = time.perf_counter()
    output = reference.generate(
        idx,
        attention_mask=torch.ones_like(idx),
        max_new_tokens=new_tokens,
        do_sample=False,
        use_cache=True,
        pad_token_id=0,
        eos_token_id=None,  # never stop early, as nash is run without a stop token
    )
    return output[0, len(prompt) :].tolist(), time.perf_counter() - started


def bench_shape(shape: str, args: argparse.Namespace) -> None:
    n_layers, d_model = (int(part) for part in shape.split("x"))
    model, reference = build_models(n_layers, d_model, args.seed)
    prompt = torch.randint(0, VOCAB_SIZE, (args.prompt_tokens,), generator=torch.Generator().manual_seed(args.seed))
    prompt = prompt.tolist()
    runners = {
        "nash": lambda n: run_nash(model, prompt, n, use_cache=True),
        "hf": lambda n: run_reference(reference, prompt, n),
    }
    if args.uncached:
        runners["nash-nc"] = lambda n: run_nash(model, prompt, n, use_cache=False)
    for run in runners.values():  # warm-up: allocator, caches, the decoding head copy
        run(8)
    rates = {name: [] for name in runners}
    outputs = {}
    print(f"\n{n_layers} layers, {d_model} wide, vocab {VOCAB_SIZE}: batch 1, prompt {len(prompt)}, "
          f"{args.new_tokens} new tokens, {torch.get_num_threads()} threads")
    for round_index in range(args.rounds):
        order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for name in order:
            tokens, elapsed_s = runners[name](args.new_tokens)
            outputs.setdefault(name, tokens)
            rates[name].append(len(tokens) / elapsed_s)
        print(f"  round {round_index + 1}: " + "  ".join(f"{name} {rates[name][-1]:6.1f} tok/s" for name in runners))
    print("  median:  " + "  ".join(f"{name} {statistics.median(rates[name]):6.1f} tok/s" for name in runners))
    for name in runners:
        if name != "hf":
            ratios = [mine / theirs for mine, theirs in zip(rates[name], rates["hf"])]
            print(f"  {name} / hf: median {statistics.median(ratios):.2f}x (rounds: "
                  + ", ".join(f"{ratio:.2f}" for ratio in ratios) + ")")
    for name, tokens in outputs.items():
        if name == "hf":
            continue
        same = tokens == outputs["hf"]
        first_difference = next((i for i, (a, b) in enumerate(zip(tokens, outputs["hf"])) if a != b), None)
        print(f"  greedy tokens {name} == hf: {same}" + ("" if same else f" (first difference at {first_difference})"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="6x384", help="Comma-separated LAYERSxWIDTH, e.g. 6x384,12x768.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument("--no-uncached", dest="uncached", action="store_false", help="Skip nash without the cache.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    print(f"torch {torch.__version__}")
    for shape in args.shapes.split(","):
        bench_shape(shape, args)


if __name__ == "__main__":
    main()
