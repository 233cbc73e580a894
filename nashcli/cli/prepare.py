"""`nash prepare`: tokenize a text source into train/val token shards under data/<name>/."""

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import filesize

from nashcli.cli.console import console, make_progress, make_table
from nashcli.errors import NashError


def command(
    source: Annotated[
        Optional[str],
        typer.Argument(
            help="shakespeare (built in), a registry name (see --list), hf:USER/NAME or hf:FOLDER, "
            "or a .txt/.jsonl/.json/.parquet file or folder."
        ),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Dataset folder to write (default: data/NAME).")
    ] = None,
    list_registry: Annotated[
        bool, typer.Option("--list", help="Show the registry of named datasets and exit.")
    ] = False,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            min=0.0,
            max=0.5,
            help="Share of tokens held out for validation, as whole documents "
            "(small corpora get at least ~50k tokens, at most 10%).",
        ),
    ] = 0.005,
    text_field: Annotated[
        str, typer.Option("--text-field", help="Field holding the text in .jsonl/.json/.parquet/hub records.")
    ] = "text",
    split: Annotated[str, typer.Option("--split", help="Split of a hub dataset to read (hf:USER/NAME).")] = "train",
    subset: Annotated[
        Optional[str], typer.Option("--subset", help="Configuration (subset) of a hub dataset, e.g. sample-10BT.")
    ] = None,
    split_blank_lines: Annotated[
        bool,
        typer.Option(
            "--split-blank-lines",
            help="In .txt files, each blank-line-separated block is a document (default: one per file).",
        ),
    ] = False,
    max_tokens: Annotated[
        Optional[int], typer.Option("--max-tokens", min=1, help="Stop after about this many tokens.")
    ] = None,
    shard_tokens: Annotated[int, typer.Option("--shard-tokens", min=1024, help="Tokens per shard file.")] = 100_000_000,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if the dataset is already prepared.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; only the final table.")] = False,
) -> None:
    """Tokenize a text source into token shards: the built-in corpus, a registry name, a hub dataset or local files.

    Example: nash prepare shakespeare
    """
    from nashcli.data.prepare import default_out_dir, prepare_dataset
    from nashcli.data.dataset_meta import DatasetMeta, is_prepared
    from nashcli.data.sources import REGISTRY, resolve_source

    if list_registry:
        rows = [[e.name, e.source_label, _format_count(e.tokens), filesize.decimal(e.disk_bytes)] for e in REGISTRY.values()]
        console.print(make_table("datasets nash prepare knows by name", ["name", "source", "tokens", "disk"], rows))
        return
    if source is None:
        raise NashError("name a source: nash prepare shakespeare (or see nash prepare --list)")
    text_source = resolve_source(
        source, text_field=text_field, split=split, subset=subset, split_blank_lines=split_blank_lines
    )
    out_dir = out if out is not None else default_out_dir(text_source)
    if is_prepared(out_dir) and not force:
        meta = DatasetMeta.read(out_dir)
        console.print(f"{out_dir} is already prepared ({meta.num_tokens:,} tokens from {meta.source}); --force rebuilds it")
        return
    budgets = [tokens for tokens in (max_tokens, text_source.token_budget, text_source.expected_tokens) if tokens]
    total_tokens = min(budgets) if budgets else None
    progress = make_progress(
        "{task.fields[documents]:,} docs",
        "{task.fields[tokens_per_s]} tokens/s",
        *([] if total_tokens else ["{task.completed:,.0f} tokens"]),
        total_known=total_tokens is not None,
        quiet=quiet,
    )
    with progress:
        task = progress.add_task(text_source.name, total=total_tokens, documents=0, tokens_per_s="-")
        started = time.perf_counter()

        def on_progress(documents: int, tokens: int) -> None:
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            progress.update(task, completed=tokens, documents=documents, tokens_per_s=f"{rate / 1e6:.2f}M")

        result = prepare_dataset(
            text_source, out_dir, val_fraction=val_fraction, shard_tokens=shard_tokens, max_tokens=max_tokens,
            force=force, on_progress=on_progress,
        )
        progress.update(task, total=result.meta.num_tokens, completed=result.meta.num_tokens)
    rows = [
        [name, info.documents, info.tokens, len(info.shards), filesize.decimal(info.tokens * 2)]
        for name, info in result.meta.splits.items()
    ]
    console.print(make_table(str(out_dir), ["split", "documents", "tokens", "shards", "size"], rows))
    console.print(
        f"{result.meta.num_tokens:,} tokens in {result.elapsed_s:.1f} s ({result.tokens_per_s / 1e6:.2f}M tokens/s); "
        f"train with --set data.dataset={out_dir if out is not None else text_source.name}"
    )


def _format_count(count: int) -> str:
    """10_000_000 -> "10M", 1_566_001 -> "1.57M": the registry's token budgets at a glance."""
    for divisor, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if count >= divisor:
            return f"{count / divisor:.3g}{suffix}"
    return str(count)
