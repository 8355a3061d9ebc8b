"""Shared fixtures: each experiment run once at the tiny scale, for all the tests that read it."""

import pytest

from babysit.lab import EXPERIMENTS


@pytest.fixture(scope="session")
def tiny():
    """tiny(name) -> the Result of that experiment at scale "tiny", seed 0 (cached)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = EXPERIMENTS[name](scale="tiny", seed=0)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def claim():
    """claim(result, start) -> the one claim of `result` whose text starts with `start`."""

    def find(result, start):
        found = [c for c in result.claims if c.text.startswith(start)]
        assert len(found) == 1, [c.text for c in result.claims]
        return found[0]

    return find
