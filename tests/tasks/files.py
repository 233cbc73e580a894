"""Task files written by the tests: made-up examples in HellaSwag's jsonl shape (no download)."""

import json
import random
from pathlib import Path

WORDS = (
    "the a man woman child dog cat runs jumps sits table kitchen garden slowly quickly ball throws catches "
    "water pours glass window opens closes café naïve über smiles 😀 bread cuts knife river swims boat"
).split()


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def hellaswag_records(count: int, seed: int = 0, long_contexts: int = 0, num_endings: int = 4) -> list[dict]:
    """`count` examples with every field of HellaSwag's validation file; the first `long_contexts`
    have contexts of about 100 words (longer than a small test model's context)."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        ctx_a = sentence(rng, 80, 120) if index < long_contexts else sentence(rng, 3, 12)
        ctx_b = rng.choice(["he", "she", "they", "the dog"])
        records.append({
            "ind": index,
            "activity_label": "Made up",
            "ctx_a": ctx_a.capitalize() + ".",
            "ctx_b": ctx_b,
            "ctx": f"{ctx_a.capitalize()}. {ctx_b}",
            "split": "val",
            "split_type": "indomain",
            "label": rng.randrange(num_endings),
            "endings": [sentence(rng, 1, 6) + "." for _ in range(num_endings)],
            "source_id": f"made-up~{index}",
        })
    return records


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def write_hellaswag_file(path: Path, count: int, seed: int = 0, long_contexts: int = 0) -> Path:
    return write_jsonl(path, hellaswag_records(count, seed, long_contexts))
