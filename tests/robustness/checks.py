"""What every robustness test asserts (one `error:` line and no traceback, files left as they were),
and the damage the fuzz tests do."""

import random
from pathlib import Path
from typing import Optional, Sequence


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), to compare before and after a command."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def one_error_line(result) -> str:
    """The error line of a CliRunner result that must be a user error: exit code 2, one line, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def flip_random_bytes(data: bytes, seed: int, positions: Optional[Sequence[int]] = None) -> bytes:
    """1 to 3 bytes of `data` (at some of `positions`, default anywhere), each changed to another value."""
    rng, flipped = random.Random(seed), bytearray(data)
    for _ in range(rng.randint(1, 3)):
        position = rng.choice(positions) if positions is not None else rng.randrange(len(flipped))
        flipped[position] = (flipped[position] + rng.randrange(1, 256)) % 256
    return bytes(flipped)
