"""Fuzzing the two file loaders: damaged input either loads or raises the documented error.

``SteeringVector.load`` may only raise :class:`VectorFileError` (NaN/inf included), and
``steerlens info``'s reader must refuse exactly the same inputs with the same message;
``load_pairs_jsonl`` may only raise :class:`PairsFileError`. Cases: every truncation of a valid
file, single-bit flips across it, random bytes and random JSON records (hypothesis),
schema fields and tensor entries replaced by random JSON values in otherwise valid
files, and pathological JSON (deep nesting, over-long ints, NaN literals, BOMs).

A full run feeds about 2,860 inputs: ~1,620 vector files (~1,420 rejected) and ~1,240
JSONL files (~1,110 rejected); the counter is printed at the end
(``pytest -s tests/test_fuzz.py``).
"""

from __future__ import annotations

import json
import random
import struct
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import join_safetensors, split_safetensors, steerlens_header
from hypothesis import given, settings
from hypothesis import strategies as st

from steerlens import SteeringVector
from steerlens.errors import PairsFileError, VectorFileError
from steerlens.formats.pairs import load_pairs_jsonl
from steerlens.formats.vector_file import summarize_vector_file

pytestmark = pytest.mark.slow  # thousands of generated files: `make test-fast` skips it, `make test` runs it

COUNTS: Counter[str] = Counter()


def valid_vector_bytes(tmp: Path) -> bytes:
    vec = SteeringVector({0: torch.randn(8), 2: torch.randn(8)}, metadata={"model_name": "fuzz"})
    vec.save(tmp / "v.safetensors")
    return (tmp / "v.safetensors").read_bytes()


VALID_JSONL = "\n".join(
    json.dumps({"positive": p, "negative": n}) for p, n in [("I love it", "I hate it"), ("good ✓", "bad"), ("a", "b")]
).encode()


def check_vector(path: Path, data: bytes) -> None:
    """A load either succeeds or raises VectorFileError, and `steerlens info` (summarize_vector_file, read
    without torch) does exactly the same: the same refusal with the same message, or the same norms."""
    path.write_bytes(data)
    COUNTS["vector"] += 1
    try:
        vec = SteeringVector.load(path)
    except VectorFileError as load_error:
        COUNTS["vector rejected"] += 1
        with pytest.raises(VectorFileError) as info_error:
            summarize_vector_file(path)
        assert str(info_error.value) == str(load_error)
        return
    assert all(torch.isfinite(t).all() for t in vec.layer_activations.values())
    summary = summarize_vector_file(path)
    assert summary.norms == pytest.approx({k: float(v.double().norm()) for k, v in vec.layer_activations.items()})
    assert (summary.layer_type, summary.d_model, summary.metadata) == (vec.layer_type, vec.d_model, vec.metadata)


def check_pairs(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    COUNTS["jsonl"] += 1
    try:
        pairs = load_pairs_jsonl(path)
    except PairsFileError:
        COUNTS["jsonl rejected"] += 1
        return
    assert pairs and all(isinstance(s, str) and s.strip() for pair in pairs for s in pair)


def damaged_copies(data: bytes, seed: int, flips: int = 600):
    """Every truncation of ``data``, then ``flips`` copies with one random bit flipped."""
    for n in range(len(data)):
        yield data[:n]
    rng = random.Random(seed)
    for _ in range(flips):
        flipped = bytearray(data)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        yield bytes(flipped)


def test_vector_truncations_and_bit_flips(tmp_path):
    for data in damaged_copies(valid_vector_bytes(tmp_path), seed=0):
        check_vector(tmp_path / "fuzz.safetensors", data)


def test_jsonl_truncations_and_bit_flips(tmp_path):
    for data in damaged_copies(VALID_JSONL, seed=1):
        check_pairs(tmp_path / "fuzz.jsonl", data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_as_vector_file(tmp_path_factory, data):
    check_vector(tmp_path_factory.mktemp("v") / "random.safetensors", data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_random_bytes_as_jsonl(tmp_path_factory, data):
    check_pairs(tmp_path_factory.mktemp("j") / "random.jsonl", data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["positive", "negative", "x"]),
            st.one_of(st.text(max_size=8), st.integers(), st.none()),
            max_size=3,
        ),
        max_size=4,
    )
)
def test_structured_jsonl(tmp_path_factory, records):
    data = "\n".join(json.dumps(r) for r in records).encode()
    check_pairs(tmp_path_factory.mktemp("s") / "records.jsonl", data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
HEADER_FIELDS = ["format", "schema_version", "layer_type", "layers", "d_model", "metadata", "extra"]
ENTRY_FIELDS = ["dtype", "shape", "data_offsets", "extra"]


def split_vector_file(data: bytes) -> tuple[dict, dict, bytes]:
    """(safetensors header, steerlens header, tensor bytes) of a vector file."""
    raw, body = split_safetensors(data)
    return raw, steerlens_header(data), body


def join_vector_file(raw: dict, header: dict, body: bytes) -> bytes:
    return join_safetensors({**raw, "__metadata__": {"steerlens": json.dumps(header)}}, body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(HEADER_FIELDS),
    json_values,
    st.sampled_from(["layer.0", "layer.2"]),
    st.sampled_from(ENTRY_FIELDS),
    json_values,
    st.booleans(),
)
def test_schema_fields_replaced_by_random_json(tmp_path_factory, field, value, key, entry_field, entry_value, which):
    """Well-formed safetensors whose steerlens header or tensor entry carries a random JSON value."""
    tmp = tmp_path_factory.mktemp("h")
    raw, header, body = split_vector_file(valid_vector_bytes(tmp))
    if which:
        header[field] = value
    else:
        raw[key] = {**raw[key], entry_field: entry_value}
    check_vector(tmp / "schema.safetensors", join_vector_file(raw, header, body))


PATHOLOGICAL_JSON = [
    b"[" * 100_000,
    b'{"positive": ' + b"1" * 5000 + b', "negative": "b"}',
    b'{"positive": NaN, "negative": Infinity}',
    b'\xef\xbb\xbf{"positive": "a", "negative": "b"}',
    b'{"positive": "a", "negative": "b"}\r\n\x00',
    b'{"positive": "\\ud800", "negative": "b"}',
    b'{"positive": "a", "negative": "b", "positive": ""}',
    b"\xff\xfe{}",
]


@pytest.mark.parametrize("data", PATHOLOGICAL_JSON)
def test_pathological_json(tmp_path, data):
    check_pairs(tmp_path / "p.jsonl", data)
    raw, header, body = split_vector_file(valid_vector_bytes(tmp_path))
    raw["__metadata__"] = {"steerlens": data.decode("utf-8", "replace")}
    check_vector(tmp_path / "v.safetensors", join_safetensors(raw, body))
    # The same text as the whole safetensors header.
    check_vector(tmp_path / "w.safetensors", struct.pack("<Q", len(data)) + data)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print(f"\nfuzz cases run: {dict(COUNTS)}")
