"""Task tests: a private download cache, and no network unless a test fakes the fetch."""

import pytest

from nashcli.tasks import cache


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))

    def no_network(url):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(cache, "open_url", no_network)
