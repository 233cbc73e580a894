"""The layout of a run folder: the one module that knows where a run keeps its files.

    runs/<name>/
      config.yaml        the resolved NashConfig
      metrics.jsonl      one JSON object per logged step (training and evaluation records)
      summary.json       totals, written when training ends
      checkpoints/last/  checkpoints/best/  checkpoints/step_000500/ ...
      wandb/             wandb's own files, when metrics.wandb is not disabled
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import yaml

from nashcli.config import NashConfig, load_config_file
from nashcli.errors import NashError

STEP_CHECKPOINT = re.compile(r"^step_(\d{6,})$")
# Everything nash writes at the top of a run folder (with the .tmp files of its atomic writes, and
# the default outputs of `nash plot` and `nash compare`): a folder holding anything else is not replaced by --overwrite.
RUN_ENTRIES = frozenset(
    ["config.yaml", "metrics.jsonl", "summary.json", "checkpoints", "wandb", "plot.png", "compare.png"]
    + ["config.yaml.tmp", "metrics.jsonl.tmp", "summary.json.tmp"]
)


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder (nothing is created until asked)."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def wandb_dir(self) -> Path:
        """wandb's files; wandb itself creates this `wandb/` folder below the folder it is given."""
        return self.root / "wandb"

    def checkpoint_dir(self, which: str) -> Path:
        """checkpoints/last, checkpoints/best or checkpoints/step_NNNNNN (`which` = "last", "best" or a name)."""
        return self.checkpoints_dir / which

    @staticmethod
    def step_checkpoint_name(step: int) -> str:
        return f"step_{step:06d}"

    def step_checkpoint_dirs(self) -> list[Path]:
        """The numbered step checkpoints, oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [path for path in self.checkpoints_dir.iterdir() if STEP_CHECKPOINT.match(path.name)]
        return sorted(found, key=lambda path: int(STEP_CHECKPOINT.match(path.name).group(1)))

    def exists(self) -> bool:
        return self.config_path.is_file() or self.metrics_path.is_file()

    @staticmethod
    def is_run_entry(name: str) -> bool:
        """Whether an entry of this name at the top of a run folder is one nash writes."""
        return name in RUN_ENTRIES

    def write_config(self, config: NashConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        temporary = self.config_path.with_suffix(".yaml.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(self.config_path)

    def write_summary(self, summary: dict) -> None:
        temporary = self.summary_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        temporary.replace(self.summary_path)

    def read_config(self) -> NashConfig:
        if not self.config_path.is_file():
            raise NashError(f"{self.root} has no config.yaml: is it a run folder written by `nash train`?")
        return load_config_file(self.config_path)

    @classmethod
    def for_config(cls, config: NashConfig) -> "RunLayout":
        """The folder `config` trains into: runs_dir/name (name must be set; see `default_run_name`)."""
        if config.name is None:
            raise ValueError("config.name must be set before choosing the run folder")
        return cls(Path(config.runs_dir) / config.name)

    @classmethod
    def find(cls, name_or_path: "str | Path", runs_dir: Path = Path("runs")) -> "RunLayout":
        """An existing run: a folder path, or a run name under `runs_dir`.

        Raises NashError listing the runs that exist when there is no such run.
        """
        candidates = [Path(name_or_path), Path(runs_dir) / str(name_or_path)]
        for candidate in candidates:
            layout = cls(candidate)
            if layout.exists():
                return layout
        existing = sorted(path.name for path in Path(runs_dir).glob("*") if cls(path).exists())
        known = f"runs in {runs_dir}/: {', '.join(existing)}" if existing else f"no runs in {runs_dir}/ yet"
        raise NashError(f"no run {str(name_or_path)!r} (a run folder holds config.yaml and metrics.jsonl); {known}")


def default_run_name(preset: Optional[str], runs_dir: Path = Path("runs"), now: Optional[datetime] = None) -> str:
    """`<preset>-YYYYmmdd-HHMMSS` (a preset path contributes its file stem), unique under `runs_dir`."""
    stem = Path(preset).stem if preset else "run"
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", stem).lstrip("._-") or "run"
    base = f"{stem}-{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}"
    name, suffix = base, 2
    while (Path(runs_dir) / name).exists():
        name, suffix = f"{base}-{suffix}", suffix + 1
    return name
