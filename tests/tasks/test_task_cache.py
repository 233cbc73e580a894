"""HellaSwag's download: fetched once into the cache, atomically, checked, and never trusted blindly
afterwards. Only the network fetch (cache.open_url) is faked."""

import io
import json
import re
import urllib.error
from pathlib import Path

import pytest

from nashcli.errors import NashError
from nashcli.tasks import cache, hellaswag
from nashcli.tasks.registry import load_task
from tests.tasks.files import hellaswag_records

NUM_EXAMPLES = 12  # the real file has 10,042; the check is the same


@pytest.fixture(autouse=True)
def _small_hellaswag(monkeypatch):
    monkeypatch.setattr(hellaswag, "NUM_EXAMPLES", NUM_EXAMPLES)


def hellaswag_bytes(count: int = NUM_EXAMPLES) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in hellaswag_records(count)).encode()


class FakeServer:
    """Serves `content` in small chunks and counts the requests."""

    def __init__(self, content: bytes, fail_after: int | None = None):
        self.content, self.fail_after, self.requests = content, fail_after, 0
        self.final_path_seen = False  # whether the cached file existed while the download ran

    def __call__(self, url):
        self.requests += 1
        assert url == hellaswag.URL
        stream = io.BytesIO(self.content)
        fail_after = self.fail_after
        server = self

        class Response:
            def read(self, size):
                server.final_path_seen |= hellaswag.cached_path().exists()
                if fail_after is not None and stream.tell() >= fail_after:
                    raise ConnectionResetError("connection reset by peer")
                return stream.read(min(size, 1000))

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        return Response(), len(self.content)


def cache_files() -> list[str]:
    return sorted(path.name for path in cache.cache_dir().glob("*")) if cache.cache_dir().exists() else []


def test_first_use_downloads_with_progress_and_later_uses_hit_the_cache(monkeypatch):
    server = FakeServer(hellaswag_bytes())
    monkeypatch.setattr(cache, "open_url", server)
    progress = []
    task = load_task("hellaswag", limit=5, on_download=lambda done, total: progress.append((done, total)))
    assert len(task.examples) == 5 and server.requests == 1
    assert hellaswag.cached_path() == cache.cache_dir() / "hellaswag_val.jsonl"
    assert hellaswag.cached_path().read_bytes() == server.content
    assert progress[-1] == (len(server.content), len(server.content)) and len(progress) > 1
    assert cache_files() == ["hellaswag_val.jsonl"]  # no temporary file left behind
    assert not server.final_path_seen  # written beside it, renamed into place once whole and checked
    again = load_task("hellaswag", on_download=lambda done, total: progress.append("again"))
    assert server.requests == 1 and progress[-1] != "again"
    assert len(again.examples) == NUM_EXAMPLES and again.examples[:5] == task.examples


def test_the_cache_folder_is_nash_cache_dir_or_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NASH_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert cache.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("NASH_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "nash"


def test_offline_is_one_line_saying_where_to_put_the_file(monkeypatch):
    def offline(url):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cache, "open_url", offline)
    with pytest.raises(NashError) as raised:
        load_task("hellaswag")
    assert str(raised.value) == (
        f"could not download HellaSwag's validation set from {hellaswag.URL} ([Errno -3] Temporary failure in "
        f"name resolution): download it by hand and save it as {hellaswag.cached_path()}, or pass its path with "
        "--task-file PATH"
    )
    assert cache_files() == []


def test_an_interrupted_download_caches_nothing(monkeypatch):
    monkeypatch.setattr(cache, "open_url", FakeServer(hellaswag_bytes(), fail_after=2000))
    with pytest.raises(NashError, match=r"connection reset by peer.*--task-file PATH$"):
        load_task("hellaswag")
    assert cache_files() == []


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"<html>rate limited</html>\n", r"line 1 is not valid JSON .*: the download from .* is not HellaSwag's"),
        (hellaswag_bytes(NUM_EXAMPLES - 1), r"sent 11 examples, not HellaSwag's 12: nothing was cached$"),
    ],
)
def test_a_download_that_is_not_the_file_caches_nothing(monkeypatch, content, problem):
    monkeypatch.setattr(cache, "open_url", FakeServer(content))
    with pytest.raises(NashError, match=problem):
        load_task("hellaswag")
    assert cache_files() == []


def test_an_endless_download_is_cut_off(monkeypatch):
    monkeypatch.setattr(hellaswag, "MAX_DOWNLOAD_BYTES", 3000)
    monkeypatch.setattr(cache, "open_url", FakeServer(hellaswag_bytes()))
    with pytest.raises(NashError, match=r"sent more than 3,000 bytes: it is not HellaSwag's validation set"):
        load_task("hellaswag")
    assert cache_files() == []


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda text: text[: len(text) // 2], r"line 7 is not valid JSON"),  # cut mid-line
        (lambda text: text.replace('"label": ', '"label": 9', 1), r'line 1 has "label" 9'),
        (lambda text: "".join(text.splitlines(keepends=True)[:-1]), r"holds 11 examples, not HellaSwag's 12"),
    ],
)
def test_a_damaged_cached_file_is_refused_in_one_line(monkeypatch, damage, problem):
    path = hellaswag.cached_path()
    path.parent.mkdir(parents=True)
    path.write_text(damage(hellaswag_bytes().decode()))
    with pytest.raises(NashError) as raised:
        load_task("hellaswag")  # the fake network raises if it is asked
    message = str(raised.value)
    assert "\n" not in message and message.startswith(str(path))
    assert re.search(problem, message), message
    assert f"the cached file is damaged; delete {path} to download it again" in message


def test_a_task_file_is_read_instead_of_the_cache(tmp_path):
    path = tmp_path / "my-copy.jsonl"
    path.write_bytes(hellaswag_bytes(20))  # a local copy need not be the whole set
    task = load_task("hellaswag", task_file=path, limit=15)
    assert len(task.examples) == 15 and task.name == "hellaswag"
    assert task.description == f"hellaswag: 15 of 20 examples from {path}"
    assert not Path(hellaswag.cached_path()).exists()
