"""HellaSwag (Zellers et al., 2019): pick the most likely of 4 endings of an everyday scene.

The validation set is the jsonl its authors publish (10,042 examples), the file llm.c downloads too;
it is fetched once into the cache. Scored as llm.c scores it (see multiple_choice.py), GPT-2 124M
gets acc 0.2859 and acc_norm 0.2955 (EleutherAI's harness, which scores differently: 0.2892 / 0.3114).
"""

from pathlib import Path
from typing import Optional

from nashcli.errors import NashError
from nashcli.tasks.cache import DownloadProgress, cache_dir, download_once
from nashcli.tasks.multiple_choice import MultipleChoiceTask, read_multiple_choice_file

NAME = "hellaswag"
URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
FILE_NAME = "hellaswag_val.jsonl"
NUM_EXAMPLES = 10_042
NUM_ENDINGS = 4
MAX_DOWNLOAD_BYTES = 64 << 20  # the file is about 11 MB


def cached_path() -> Path:
    return cache_dir() / FILE_NAME


def load(
    *, task_file: Optional[Path] = None, limit: Optional[int] = None, on_download: Optional[DownloadProgress] = None
) -> MultipleChoiceTask:
    """HellaSwag's validation set from `task_file`, else from the cache (downloaded on first use);
    its first `limit` examples."""
    if task_file is not None:
        examples = read_multiple_choice_file(task_file, num_endings=NUM_ENDINGS)
        source = task_file
    else:
        source = download_once(
            URL,
            cached_path(),
            what="HellaSwag's validation set",
            max_bytes=MAX_DOWNLOAD_BYTES,
            validate=_check_download,
            on_progress=on_download,
        )
        examples = _read_cached(source)
    chosen = examples[:limit]
    return MultipleChoiceTask(NAME, chosen, f"{NAME}: {len(chosen):,} of {len(examples):,} examples from {source}")


def _read_cached(path: Path) -> list:
    # The cache holds only files that were whole when written: anything else is damage (or a copy
    # put there by hand that is not the real file).
    fix = f"the cached file is damaged; delete {path} to download it again"
    examples = read_multiple_choice_file(path, num_endings=NUM_ENDINGS, fix=fix)
    if len(examples) != NUM_EXAMPLES:
        raise NashError(
            f"{path} holds {len(examples):,} examples, not HellaSwag's {NUM_EXAMPLES:,}: {fix} "
            "(for a file of your own, use --task mc:PATH)"
        )
    return examples


def _check_download(path: Path) -> None:
    fix = f"the download from {URL} is not HellaSwag's validation set; nothing was cached"
    examples = read_multiple_choice_file(path, num_endings=NUM_ENDINGS, fix=fix)
    if len(examples) != NUM_EXAMPLES:
        raise NashError(f"{URL} sent {len(examples):,} examples, not HellaSwag's {NUM_EXAMPLES:,}: nothing was cached")
