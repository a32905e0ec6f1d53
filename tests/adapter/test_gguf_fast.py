"""The fast GGUF reader: the same fields and tensors as gguf's own reader, and one shared read of one file only
inside the block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_gguf import tiny_llama, write_llama_gguf

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("gguf_model")
    model = tiny_llama()
    return write_llama_gguf(model, folder / "tiny-llama.gguf"), model


def test_the_fast_reader_reads_what_gguf_reads_and_leaves_gguf_as_it_was(model_file, tmp_path):
    import shutil

    from steerlens.adapter._gguf_fast import fast_reader, one_fast_read

    path = model_file[0]
    other = shutil.copy(path, tmp_path / "other.gguf")
    plain, fast = gguf.GGUFReader(path), fast_reader(path)
    assert list(plain.fields) == list(fast.fields)
    for name, field in plain.fields.items():
        assert field.types == fast.fields[name].types and field.data == fast.fields[name].data
        assert all(np.array_equal(a, b) for a, b in zip(field.parts, fast.fields[name].parts, strict=True))
    for ours, theirs in zip(fast.tensors, plain.tensors, strict=True):
        assert (ours.name, ours.tensor_type) == (theirs.name, theirs.tensor_type)
        assert np.array_equal(ours.data, theirs.data)
    original = (gguf.GGUFReader, gguf.get_tensor_name_map)
    with one_fast_read(path):
        assert gguf.GGUFReader(path) is gguf.GGUFReader(str(path))  # one shared read of this file
        assert type(gguf.GGUFReader(path)).__name__ == "FastReader"
        assert type(gguf.GGUFReader(other)) is original[0]  # any other file: an ordinary reader
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == original
