"""Text read through the `datasets` library, streamed: a Hugging Face hub dataset, a dataset folder
downloaded from the hub, or local .json / .parquet files.

Offline, `datasets` retries for ~25 s before failing: a hub source first sends one short probe, so
that no network is said at once, in one line with the fix.
"""

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from nashcli.data.text_files import Piece
from nashcli.errors import NashError

HUB_PROBE_TIMEOUT_S = 2.5


@dataclass
class DatasetsStream:
    """A dataset streamed with `datasets.load_dataset(..., streaming=True)`: a hub id, a local dataset
    folder, or a builder ("json", "parquet") over local `data_files`. Only `text_field` is read."""

    path: str
    name: str
    description: str
    subset: Optional[str] = None
    split: str = "train"
    data_files: Optional[list[str]] = None
    text_field: str = "text"
    expected_tokens: Optional[int] = None
    token_budget: Optional[int] = None
    batch_size: int = field(default=512, repr=False)

    @property
    def reads_hub(self) -> bool:
        """True unless `path` names local data; `datasets` too prefers a local folder of that name."""
        return self.data_files is None and not Path(self.path).exists()

    def pieces(self) -> Iterator[Piece]:
        batches = self._open()
        first = True
        while True:
            try:
                with _library_warnings_silenced():
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
        if self.reads_hub:
            self._check_hub_reachable()
        import datasets  # here, not at the top: importing it takes seconds

        try:
            with _library_warnings_silenced():
                dataset = datasets.load_dataset(
                    self.path, name=self.subset, split=self.split, data_files=self.data_files, streaming=True
                )
            return iter(dataset.iter(batch_size=self.batch_size))
        except Exception as error:  # noqa: BLE001 - network, missing dataset, bad file: one line each
            raise self._error("opening", error) from None

    def _check_hub_reachable(self) -> None:
        reason = hub_unreachable_reason()
        if reason is not None:
            # The same data read from a downloaded folder: the options that chose it here.
            chosen = {
                "--subset": self.subset,
                "--split": None if self.split == "train" else self.split,
                "--max-tokens": self.token_budget,
            }
            options = "".join(f" {option} {value}" for option, value in chosen.items() if value)
            raise NashError(
                f"the Hugging Face hub is unreachable ({reason}), so {self.description} cannot be streamed: "
                f"connect to the network, or download the dataset where there is one and pass its folder: "
                f"nash prepare hf:FOLDER{options}"
            )

    def _error(self, doing: str, error: Exception) -> NashError:
        detail = f"{type(error).__name__}: {_first_line(str(error))}"
        if self.reads_hub:
            return NashError(
                f"could not reach the Hugging Face hub dataset {self.description} while {doing} it ({detail}): "
                "check the network and the dataset id, or pass a copy downloaded elsewhere (nash prepare hf:FOLDER)"
            )
        fix = "check the file" if self.data_files else "check the folder, --split and --subset"
        return NashError(f"could not read {self.description} ({detail}): {fix}")


def hub_unreachable_reason() -> Optional[str]:
    """Why the Hugging Face hub cannot be reached (an offline setting, or no answer to one request
    within HUB_PROBE_TIMEOUT_S); None when it answers."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").upper() in constants.ENV_VARS_TRUE_VALUES:
            return f"{variable} is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - any failure to get an answer means offline here
        return f"{constants.ENDPOINT} did not answer: {type(error).__name__}: {_first_line(str(error), limit=80)}"
    return None


@contextmanager
def _library_warnings_silenced() -> Iterator[None]:
    """`datasets` and `huggingface_hub` log retry warnings that would bury the one-line error a
    failure becomes; silence them for this call only and give back the levels the process had."""
    loggers = [logging.getLogger(name) for name in ("datasets", "huggingface_hub")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no details"
    return line if len(line) <= limit else line[: limit - 3] + "..."
