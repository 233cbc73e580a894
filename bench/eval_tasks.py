"""Speed of `nash eval --task hellaswag --limit 500` with the tiny preset's model shape (no network).

A randomly initialised GPT of presets/tiny.yaml's shape (2 layers, 4 heads, 128 wide, context 128)
is exported in the Hugging Face format and evaluated through the same path `nash eval hf:FOLDER
--task hellaswag --task-file FILE --limit 500` takes (prepare_task_evaluation, then run), on a
generated file in HellaSwag's shape with HellaSwag-like lengths (contexts of 20-100 words, endings
of 8-30). Prints the load time, the scoring time and examples/s per round, and the median.
Target: under one minute for the 500 examples on 2 cores.

    python bench/eval_tasks.py [--limit 500] [--rounds 3] [--precision auto]
"""

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nashcli.config import resolve_config
from nashcli.engine.loading import TaskEvalRequest, prepare_task_evaluation
from nashcli.model.gpt import GPT
from nashcli.model.hf import export_hf

WORDS = (
    "the a man woman person child dog he she they is are was then begins continues holds takes puts uses "
    "water paint brush ball rope board floor table kitchen garden camera screen slowly quickly while and "
    "with into onto around behind front side using another several finally again shows how to make"
).split()


def write_hellaswag_like(path: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)

    def sentence(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    with open(path, "w", encoding="utf-8") as file:
        for index in range(count):
            record = {
                "ind": index,
                "ctx": sentence(20, 100).capitalize() + ". " + rng.choice(["he", "she", "they"]),
                "endings": [sentence(8, 30) + "." for _ in range(4)],
                "label": rng.randrange(4),
            }
            file.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default=None, help="fp32, bf16 or auto (default: the model's, auto)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = GPT(resolve_config("tiny", []).model)
    with tempfile.TemporaryDirectory() as folder:
        export_hf(model, Path(folder) / "hf")
        task_file = Path(folder) / "hellaswag_val.jsonl"
        write_hellaswag_like(task_file, args.limit)
        request = TaskEvalRequest(
            f"hf:{Path(folder) / 'hf'}", "hellaswag", limit=args.limit, task_file=task_file,
            precision=args.precision, device="cpu",
        )
        walls, cpu_times = [], []
        for round_number in range(1, args.rounds + 1):
            started, cpu_started = time.perf_counter(), time.process_time()
            evaluation = prepare_task_evaluation(request)
            loaded = time.perf_counter()
            results = evaluation.run()
            finished = time.perf_counter()
            walls.append(finished - started)
            cpu_times.append(time.process_time() - cpu_started)
            print(
                f"round {round_number}: {evaluation.description}; load {loaded - started:.1f} s, "
                f"scoring {finished - loaded:.1f} s = {results['count'] / (finished - loaded):.1f} examples/s; "
                f"wall {finished - started:.1f} s, CPU {cpu_times[-1]:.1f} s "
                f"(acc {results['acc']:.3f}, acc_norm {results['acc_norm']:.3f})",
                flush=True,
            )
    median, threads = statistics.median(walls), torch.get_num_threads()
    # On a shared machine the wall time includes waiting for the cores; CPU time / threads is what
    # the same work takes on idle cores.
    print(f"median wall time: {median:.1f} s for {args.limit} examples ({args.limit / median:.1f} examples/s, "
          f"{threads} threads; CPU time / threads {statistics.median(cpu_times) / threads:.1f} s); target < 60 s; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
