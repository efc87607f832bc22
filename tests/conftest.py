"""Test setup: only the built-in plugins load, caches go to a temp folder."""

import os

import pytest

from seqify.plugins import DEFAULT_PLUGINS

os.environ["SEQIFY_LOAD_PLUGINS"] = ",".join(DEFAULT_PLUGINS)
os.environ.setdefault("COLUMNS", "200")  # rich: no line wrapping in CLI output


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    os.environ["SEQIFY_CACHE"] = str(tmp_path_factory.mktemp("seqify-cache"))
    yield


@pytest.fixture
def fresh_registry():
    """A registry rebuilt for this test and forgotten afterwards."""
    from seqify.plugins import reset_registry

    reset_registry()
    yield
    reset_registry()
