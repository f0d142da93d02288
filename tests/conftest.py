"""Shared fixtures: the real-data folder, slow-test gating."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vidssl.paths import data_root


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow (CI does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow") or os.environ.get("VIDSSL_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow or VIDSSL_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$VIDSSL_DATA``). Skips where absent, fails in CI (VIDSSL_REQUIRE_DATA=1)."""
    root = data_root()
    if root is None or not root.is_dir():
        if os.environ.get("VIDSSL_REQUIRE_DATA") == "1":
            pytest.fail("shared data not found: set VIDSSL_DATA or place it at ../shared/data")
        pytest.skip("shared data not found (set VIDSSL_DATA)")
    return root
