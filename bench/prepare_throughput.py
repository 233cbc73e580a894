"""Throughput of `nash prepare` against plain tiktoken, and its peak memory.

Tokenizes the same text (the built-in Shakespeare corpus repeated to ~20 MB, written as a .jsonl
file) two ways, alternating A B A B so that machine noise hits both alike:
  A  tiktoken `encode_ordinary_batch` on all cores, over the texts already in memory (no I/O);
  B  nash's `prepare_dataset` end to end: read the .jsonl, tokenize, write shards and meta.json.
Prints tokens/s for each round and the median ratio B/A (target: >= 0.8). Then runs
`nash prepare` in a subprocess on the same file and on a corpus --big-mb large and prints each
one's peak RSS (target: < 1 GB, flat in corpus size; read from /proc, so Linux only).

    python bench/prepare_throughput.py [--rounds 5] [--mb 20] [--big-mb 200] [--threads N]
                                       [--documents plays|paragraphs]
"""

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nashcli.assets import SHAKESPEARE_PATH
from nashcli.data.prepare import prepare_dataset
from nashcli.data.sources import resolve_source
from nashcli.data.tokenizer import get_tokenizer


def write_corpus(path: Path, target_mb: float, documents: str = "plays") -> list[str]:
    """Write the built-in corpus repeated to about `target_mb` MB of text as .jsonl; return the texts.

    documents="plays": 42 documents of ~120 kB per repeat; "paragraphs": ~39k documents of ~130
    bytes (the shape of TinyStories-like corpora, where per-document costs dominate).
    """
    with gzip.open(SHAKESPEARE_PATH, "rt", encoding="utf-8") as file:
        plays = [json.loads(line)["text"] for line in file]
    if documents == "paragraphs":
        plays = [paragraph for play in plays for paragraph in play.split("\n\n") if paragraph.strip()]
    play_bytes = sum(len(text.encode()) for text in plays)
    repeats = max(1, round(target_mb * 1e6 / play_bytes))
    texts = plays * repeats
    with open(path, "w", encoding="utf-8") as file:
        for text in texts:
            file.write(json.dumps({"text": text}) + "\n")
    return texts


def time_tiktoken(texts: list[str], threads: int) -> tuple[int, float]:
    encoding = get_tokenizer().encoding
    started = time.perf_counter()
    batches = encoding.encode_ordinary_batch(texts, num_threads=threads)
    elapsed = time.perf_counter() - started
    return sum(len(ids) for ids in batches) + len(texts), elapsed  # + one EOT per document, as nash writes


def time_nash(corpus: Path, out_dir: Path, threads: int) -> tuple[int, float]:
    started = time.perf_counter()
    result = prepare_dataset(resolve_source(str(corpus)), out_dir, force=True, num_threads=threads)
    elapsed = time.perf_counter() - started
    return result.meta.num_tokens, elapsed


def peak_rss_mb_of_cli(corpus: Path, out_dir: Path) -> tuple[float, float]:
    """Peak RSS (MB) and wall time of `nash prepare CORPUS --out OUT` in a fresh process."""
    started = time.perf_counter()
    # The child reads its own VmHWM: ru_maxrss would include this process's peak, which Linux
    # carries over fork and exec.
    script = (
        "import sys; from nashcli.cli.app import main; sys.argv = sys.argv[1:]\n"
        "try: main()\n"
        "except SystemExit: pass\n"
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, "nash", "prepare", str(corpus), "--out", str(out_dir), "--force", "--quiet"],
        capture_output=True, text=True, check=True,
    )
    elapsed = time.perf_counter() - started
    peak_kb = int(completed.stdout.strip().splitlines()[-1])
    return peak_kb / 1024, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=float, default=20.0, help="Size of the timed corpus in MB of text.")
    parser.add_argument("--big-mb", type=float, default=200.0, help="Size of the memory-check corpus; 0 skips it.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--documents", choices=["plays", "paragraphs"], default="plays", help="Document size.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        texts = write_corpus(corpus, args.mb, args.documents)
        print(f"corpus: {corpus.stat().st_size / 1e6:.1f} MB jsonl, {len(texts)} documents, {args.threads} threads")
        time_tiktoken(texts[:4], args.threads)  # warm-up: load the tokenizer, start the threads
        ratios = []
        for round_index in range(args.rounds):
            tiktoken_tokens, tiktoken_s = time_tiktoken(texts, args.threads)
            nash_tokens, nash_s = time_nash(corpus, Path(tmp) / "out", args.threads)
            assert nash_tokens == tiktoken_tokens, (nash_tokens, tiktoken_tokens)
            ratio = (nash_tokens / nash_s) / (tiktoken_tokens / tiktoken_s)
            ratios.append(ratio)
            print(
                f"round {round_index + 1}: tiktoken {tiktoken_tokens / tiktoken_s / 1e6:.2f} M tokens/s, "
                f"nash prepare {nash_tokens / nash_s / 1e6:.2f} M tokens/s, ratio {ratio:.2f}"
            )
        print(f"median ratio nash/tiktoken: {statistics.median(ratios):.2f} (target >= 0.8)")
        del texts

        peak_mb, wall_s = peak_rss_mb_of_cli(corpus, Path(tmp) / "cli")
        print(f"nash prepare ({args.mb:.0f} MB): peak RSS {peak_mb:.0f} MB, {wall_s:.1f} s wall incl. start-up")
        if args.big_mb > 0:
            big = Path(tmp) / "big.jsonl"
            write_corpus(big, args.big_mb, args.documents)
            peak_mb, wall_s = peak_rss_mb_of_cli(big, Path(tmp) / "big")
            print(f"nash prepare ({args.big_mb:.0f} MB): peak RSS {peak_mb:.0f} MB, {wall_s:.1f} s wall incl. start-up")


if __name__ == "__main__":
    main()
