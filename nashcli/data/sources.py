"""Where text comes from: the registry of named corpora, hub datasets and local files.

Every source yields *pieces* `(text, ends_document)`: a document arrives as one piece or, when it is
large (a big .txt file), as several consecutive pieces cut anywhere, the last with `ends_document`
True. Sources never hold a whole corpus in memory.

Accepted by `nash prepare SOURCE`:
- a registry name (`shakespeare`, built in; `tinystories_10M`, ...: hub datasets with a token budget),
- `hf:USER/NAME` (any hub dataset, with `split`, `subset` and `text_field`), or `hf:FOLDER`: a dataset
  folder `datasets.load_dataset` reads, such as a hub dataset downloaded elsewhere,
- a local `.txt`, `.jsonl`, `.json` or `.parquet` file (`.txt.gz` and `.jsonl.gz` too), or a folder of them.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Protocol, Sequence

from nashcli.assets import SHAKESPEARE_PATH
from nashcli.data.datasets_stream import DatasetsStream
from nashcli.data.text_files import Piece, read_blank_line_documents, read_jsonl_documents, read_text_document
from nashcli.errors import NashError

TEXT_SUFFIXES = (".txt", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
# Read through `datasets` (arrow): a .json array or a .parquet file is not line-oriented.
DATASETS_SUFFIXES = {".json": "json", ".parquet": "parquet"}
# Exact token count of the built-in corpus (42 documents, EOT separators included).
SHAKESPEARE_TOKENS = 1_566_001
# Only a local folder path starts so; a hub id is USER/NAME.
LOCAL_PATH_PREFIXES = ("/", ".", "~")


class TextSource(Protocol):
    """Anything `nash prepare` can read."""

    name: str  # default dataset folder name under data/
    description: str  # what meta.json and the tables say the data came from
    expected_tokens: Optional[int]  # for the progress bar's ETA; None when unknown
    token_budget: Optional[int]  # stop after this many tokens (the registry names' suffix)

    def pieces(self) -> Iterator[Piece]: ...


@dataclass
class LocalFiles:
    """`.txt` / `.jsonl` (optionally gzipped) read line by line; `.json` / `.parquet` through `datasets`."""

    paths: list[Path]
    name: str
    description: str
    text_field: str = "text"
    split_blank_lines: bool = False
    expected_tokens: Optional[int] = None
    token_budget: Optional[int] = None

    def pieces(self) -> Iterator[Piece]:
        by_builder: dict[str, list[Path]] = {}
        for path in self.paths:
            if _has_suffix(path, TEXT_SUFFIXES):
                yield from (read_blank_line_documents(path) if self.split_blank_lines else read_text_document(path))
            elif _has_suffix(path, JSONL_SUFFIXES):
                yield from read_jsonl_documents(path, self.text_field)
            else:
                by_builder.setdefault(DATASETS_SUFFIXES[path.suffix], []).append(path)
        # One `datasets` stream per file type: its start-up cost is paid once, not once per file.
        for builder, paths in by_builder.items():
            label = paths[0].name if len(paths) == 1 else f"{len(paths)} {paths[0].suffix} files"
            yield from DatasetsStream(
                path=builder,
                data_files=[str(path) for path in paths],
                name=self.name,
                description=label,
                text_field=self.text_field,
            ).pieces()


@dataclass(frozen=True)
class RegistryEntry:
    """A named corpus: `nash prepare NAME`; the suffix of the name is its token budget."""

    name: str
    hub_id: Optional[str]  # None: the built-in corpus
    subset: Optional[str]
    tokens: int
    text_field: str = "text"
    split: str = "train"

    @property
    def source_label(self) -> str:
        if self.hub_id is None:
            return "built in (nashcli/assets)"
        return f"hf:{self.hub_id}" + (f" ({self.subset})" if self.subset else "")

    @property
    def disk_bytes(self) -> int:
        return self.tokens * 2  # uint16 tokens; headers and meta.json are negligible

    def source(self) -> TextSource:
        if self.hub_id is None:
            return LocalFiles(
                [SHAKESPEARE_PATH], name=self.name, description="built-in corpus shakespeare",
                expected_tokens=self.tokens,
            )
        return DatasetsStream(
            path=self.hub_id, subset=self.subset, split=self.split, text_field=self.text_field, name=self.name,
            description=self.source_label, expected_tokens=self.tokens, token_budget=self.tokens,
        )


REGISTRY: dict[str, RegistryEntry] = {
    entry.name: entry
    for entry in [
        RegistryEntry("shakespeare", None, None, SHAKESPEARE_TOKENS),
        RegistryEntry("tinystories_10M", "roneneldan/TinyStories", None, 10_000_000),
        RegistryEntry("openwebtext_100M", "Skylion007/openwebtext", None, 100_000_000),
        RegistryEntry("fineweb_1B", "HuggingFaceFW/fineweb", "sample-10BT", 1_000_000_000),
        RegistryEntry("fineweb-edu_1B", "HuggingFaceFW/fineweb-edu", "sample-10BT", 1_000_000_000),
        RegistryEntry("fineweb-edu_10B", "HuggingFaceFW/fineweb-edu", "sample-10BT", 10_000_000_000),
    ]
}


def resolve_source(
    spec: str,
    *,
    text_field: str = "text",
    split: str = "train",
    subset: Optional[str] = None,
    split_blank_lines: bool = False,
) -> TextSource:
    """The source `nash prepare SPEC` reads: a registry name, `hf:USER/NAME`, `hf:FOLDER`, or a local
    file or folder."""
    if spec in REGISTRY:
        return REGISTRY[spec].source()
    if spec.startswith("hf:"):
        path = _datasets_path(spec)
        label = f"hf:{path}" + (f" ({subset}, split {split})" if subset else f" (split {split})")
        return DatasetsStream(
            path=path, subset=subset, split=split, text_field=text_field, name=dataset_name(Path(path).name),
            description=label,
        )
    path = Path(spec).expanduser()
    if path.exists():
        files = list_text_files(path)
        return LocalFiles(
            files, name=dataset_name(_strip_suffixes(path.name)), description=str(path), text_field=text_field,
            split_blank_lines=split_blank_lines,
        )
    known = ", ".join(REGISTRY)
    raise NashError(
        f"unknown source '{spec}': not a registry name ({known}), not hf:USER/NAME, and no such file or folder"
    )


def _datasets_path(spec: str) -> str:
    """What `hf:TARGET` asks `datasets` for: a hub id, or the absolute path of a local dataset folder."""
    target = spec[3:]
    folder = Path(target).expanduser()
    if target.startswith(LOCAL_PATH_PREFIXES) or folder.exists():
        if not folder.is_dir():
            raise NashError(
                f"'{spec}': {folder} is not a folder: hf: takes a hub dataset id (hf:USER/NAME) or a dataset folder "
                "(hf:./FOLDER); a single file needs no hf: (nash prepare FILE)"
            )
        return str(folder.resolve())
    hub_id = target.rstrip("/")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", hub_id):
        raise NashError(
            f"'{spec}' is not a hub dataset id: write hf:USER/NAME, e.g. hf:roneneldan/TinyStories, or hf:./FOLDER"
        )
    return hub_id


def list_text_files(path: Path) -> list[Path]:
    """The readable files at `path` (itself, or those under a folder, sorted); NashError if there are none."""
    readable = (*TEXT_SUFFIXES, *JSONL_SUFFIXES, *DATASETS_SUFFIXES)
    if path.is_file():
        if not _has_suffix(path, readable):
            raise NashError(f"{path}: unsupported file type; nash prepare reads {', '.join(readable)} files or folders")
        return [path]
    files = sorted(
        file for file in path.rglob("*")
        if file.is_file() and _has_suffix(file, readable) and not file.name.startswith(".")
    )
    if not files:
        raise NashError(f"folder {path} holds no {', '.join(readable)} files")
    return files


def dataset_name(raw: str) -> str:
    """A folder name from a file or dataset name: letters, digits, '.', '_' and '-' only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._-")
    return name or "dataset"


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    return path.name.lower().endswith(tuple(suffixes))


def _strip_suffixes(name: str) -> str:
    for suffix in sorted((*TEXT_SUFFIXES, *JSONL_SUFFIXES, *DATASETS_SUFFIXES), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
