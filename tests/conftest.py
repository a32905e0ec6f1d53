"""Shared fixtures: tiny seeded HookedTransformers with an in-memory tokenizer (no downloads).

The helpers they are built from (``make_model``, ``make_tokenizer``, ``PAIRS``...) live in
``helpers.py``; import those from there, not from this file.
"""

from __future__ import annotations

import time

import pytest
from helpers import PAIRS, make_model


@pytest.fixture(scope="session")
def model():
    return make_model()


@pytest.fixture(scope="session")
def rotary_model():
    return make_model(positional_embedding_type="rotary", seed=1, rotary_dim=8)


@pytest.fixture
def pairs():
    return list(PAIRS)


@pytest.fixture(scope="module")
def toy():
    """The bundled toy model, loaded once per test module."""
    from steerlens.toy import load_toy_model

    start = time.perf_counter()
    model = load_toy_model()
    print(f"\ntoy model loaded in {time.perf_counter() - start:.3f}s")
    return model


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the hub: ``HF_HUB_OFFLINE=1`` for the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
