"""Where text comes from: the registry of named corpora, hub datasets and local files.

Every source yields *pieces* `(text, ends_document)`: a document arrives as one piece or, when it is
large (a big .txt file), as several consecutive pieces cut anywhere, the last with `ends_document`
True. Sources never hold a whole corpus in memory.

Accepted by `nash prepare SOURCE`:
- a registry name (`shakespeare`, built in; `tinystories_10M`, ...: hub datasets with a token budget),
- `hf:USER/NAME` (any hub dataset, with `split`, `subset` and `text_field`),
- a local `.txt`, `.jsonl`, `.json` or `.parquet` file (`.txt.gz` and `.jsonl.gz` too), or a folder of them.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Protocol, Sequence

from nashcli.assets import SHAKESPEARE_PATH
from nashcli.data.text_files import Piece, read_blank_line_documents, read_jsonl_documents, read_text_document
from nashcli.errors import NashError

TEXT_SUFFIXES = (".txt", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
# Read through `datasets` (arrow): a .json array or a .parquet file is not line-oriented.
DATASETS_SUFFIXES = {".json": "json", ".parquet": "parquet"}
# Exact token count of the built-in corpus (42 documents, EOT separators included).
SHAKESPEARE_TOKENS = 1_566_001


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


@dataclass
class DatasetsStream:
    """A dataset streamed with `datasets.load_dataset(..., streaming=True)`: a hub id, or a builder
    ("json", "parquet") over local `data_files`. Only `text_field` is read."""

    path: str
    name: str
    description: str
    subset: Optional[str] = None
    split: str = "train"
    data_files: Optional[list[str]] = None
    text_field: str = "text"
    expected_tokens: Optional[int] = None
    token_budget: Optional[int] = None
    is_hub: bool = False
    batch_size: int = field(default=512, repr=False)

    def pieces(self) -> Iterator[Piece]:
        batches = self._open()
        first = True
        while True:
            try:
                batch = next(batches, None)
            except Exception as error:  # noqa: BLE001 - any reader failure becomes the one-line error
                raise self._error("reading", error) from None
            if batch is None:
                return
            if first and self.text_field not in batch:
                fields = ", ".join(batch) or "none"
                raise NashError(
                    f"{self.description} has no field '{self.text_field}' (fields: {fields}): pass --text-field NAME"
                )
            first = False
            for text in batch[self.text_field]:
                if text is None or text == "":
                    continue
                if not isinstance(text, str):
                    raise NashError(
                        f"{self.description}: field '{self.text_field}' holds {type(text).__name__}, not text: "
                        "pass --text-field NAME"
                    )
                yield text, True

    def _open(self) -> Iterator[dict]:
        try:
            import datasets
            import huggingface_hub

            # Their retry warnings would bury the one-line error this turns a failure into.
            datasets.logging.set_verbosity_error()
            huggingface_hub.logging.set_verbosity_error()
            dataset = datasets.load_dataset(
                self.path, name=self.subset, split=self.split, data_files=self.data_files, streaming=True
            )
            return iter(dataset.iter(batch_size=self.batch_size))
        except Exception as error:  # noqa: BLE001 - network, missing dataset, bad file: one line each
            raise self._error("opening", error) from None

    def _error(self, doing: str, error: Exception) -> NashError:
        detail = f"{type(error).__name__}: {_first_line(str(error))}"
        if self.is_hub:
            return NashError(
                f"could not reach the Hugging Face hub dataset {self.description} while {doing} it ({detail}): "
                "check the network and the dataset id, or prepare local files instead (nash prepare PATH)"
            )
        return NashError(f"could not read {self.description} ({detail}): check the file")


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
            description=self.source_label, expected_tokens=self.tokens, token_budget=self.tokens, is_hub=True,
        )


REGISTRY: dict[str, RegistryEntry] = {
    entry.name: entry
    for entry in [
        RegistryEntry("shakespeare", None, None, SHAKESPEARE_TOKENS),
        RegistryEntry("tinystories_10M", "roneneldan/TinyStories", None, 10_000_000),
        RegistryEntry("openwebtext_100M", "Skylion007/openwebtext", None, 100_000_000),
        RegistryEntry("fineweb_1B", "HuggingFaceFW/fineweb-edu", "sample-10BT", 1_000_000_000),
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
    """The source `nash prepare SPEC` reads: a registry name, `hf:USER/NAME`, or a local file or folder."""
    if spec in REGISTRY:
        return REGISTRY[spec].source()
    if spec.startswith("hf:"):
        hub_id = spec[3:].strip("/")
        if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", hub_id):
            raise NashError(f"'{spec}' is not a hub dataset id: write hf:USER/NAME, e.g. hf:roneneldan/TinyStories")
        label = f"hf:{hub_id}" + (f" ({subset}, split {split})" if subset else f" (split {split})")
        return DatasetsStream(
            path=hub_id, subset=subset, split=split, text_field=text_field, name=dataset_name(hub_id.split("/")[-1]),
            description=label, is_hub=True,
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


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no details"
    return line if len(line) <= limit else line[: limit - 3] + "..."
