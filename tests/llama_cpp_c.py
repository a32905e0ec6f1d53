"""llama.cpp itself, through the C API the ``xllamacpp`` wheel's library exports (ctypes, no build step).

Just enough to evaluate token ids and read the last position's logits, with a control vector
loaded by llama.cpp's own loader (``common_control_vector_load``, what ``llama-cli
--control-vector-scaled FILE STRENGTH`` runs) and applied as llama.cpp applies it
(``llama_set_adapter_cvec`` over layers 1 .. n_layer). Parameter structs are passed as
llama.cpp's defaults, returned by llama.cpp into buffers larger than any version's struct.
"""

from __future__ import annotations

import ctypes
import importlib.util
import struct
from pathlib import Path

import numpy as np

_OPAQUE = 2048  # bytes: more than llama_model_params / llama_context_params hold in any llama.cpp version
# common_control_vector_load(const std::vector<common_control_vector_load_info>&), C++ (Itanium ABI).
_CVEC_LOAD = "_Z26common_control_vector_loadRKSt6vectorI31common_control_vector_load_infoSaIS0_EE"


class _Params(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_ubyte * _OPAQUE)]


class _Batch(ctypes.Structure):
    _fields_ = [
        ("n_tokens", ctypes.c_int32),
        ("token", ctypes.POINTER(ctypes.c_int32)),
        ("embd", ctypes.POINTER(ctypes.c_float)),
        ("pos", ctypes.POINTER(ctypes.c_int32)),
        ("n_seq_id", ctypes.POINTER(ctypes.c_int32)),
        ("seq_id", ctypes.POINTER(ctypes.POINTER(ctypes.c_int32))),
        ("logits", ctypes.POINTER(ctypes.c_int8)),
    ]


class _LoadInfo(ctypes.Structure):
    """``common_control_vector_load_info { float strength; std::string fname; }`` as this build lays it out.

    The wheel's llama.cpp is built with libstdc++'s pre-C++11 string ABI for this struct (its
    loader steps 16 bytes per item): ``fname`` is one pointer to the characters, which follow a
    ``{length, capacity, refcount}`` header (see :func:`_cow_string`).
    """

    _fields_ = [("strength", ctypes.c_float), ("fname", ctypes.c_void_p)]


def _cow_string(text: bytes) -> tuple[ctypes.Array, int]:
    """A libstdc++ copy-on-write string's storage for ``text``: (buffer to keep alive, the string's pointer).

    The reference count is set high so a copy the loader makes never frees memory Python owns.
    """
    header = struct.pack("<QQi4x", len(text), len(text), 1 << 20)
    buffer = ctypes.create_string_buffer(header + text + b"\0")
    return buffer, ctypes.addressof(buffer) + len(header)


class _StdVector(ctypes.Structure):
    _fields_ = [("begin", ctypes.c_void_p), ("end", ctypes.c_void_p), ("cap", ctypes.c_void_p)]


_LOG = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_QUIET = _LOG(lambda level, text, data: None)


def library() -> ctypes.CDLL | None:
    """xllamacpp's shared library (llama.cpp, CPU build), or None when the wheel is not installed."""
    spec = importlib.util.find_spec("xllamacpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("xllamacpp*.so"))
    if not found:
        return None
    lib = ctypes.CDLL(str(found[0]))
    lib.llama_log_set(_QUIET, None)
    lib.llama_backend_init()
    lib.llama_model_default_params.restype = _Params
    lib.llama_context_default_params.restype = _Params
    lib.llama_model_load_from_file.restype = ctypes.c_void_p
    lib.llama_model_load_from_file.argtypes = [ctypes.c_char_p, _Params]
    lib.llama_init_from_model.restype = ctypes.c_void_p
    lib.llama_init_from_model.argtypes = [ctypes.c_void_p, _Params]
    lib.llama_model_n_layer.argtypes = [ctypes.c_void_p]
    lib.llama_model_n_layer.restype = ctypes.c_int32
    lib.llama_batch_get_one.restype = _Batch
    lib.llama_batch_get_one.argtypes = [ctypes.POINTER(ctypes.c_int32), ctypes.c_int32]
    lib.llama_decode.argtypes = [ctypes.c_void_p, _Batch]
    lib.llama_decode.restype = ctypes.c_int32
    lib.llama_get_logits_ith.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.llama_get_logits_ith.restype = ctypes.POINTER(ctypes.c_float)
    lib.llama_set_adapter_cvec.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_size_t,
        ctypes.c_int32,
        ctypes.c_int32,
        ctypes.c_int32,
    ]
    lib.llama_set_adapter_cvec.restype = ctypes.c_int32
    lib.llama_model_get_vocab.argtypes = [ctypes.c_void_p]
    lib.llama_model_get_vocab.restype = ctypes.c_void_p
    lib.llama_vocab_n_tokens.argtypes = [ctypes.c_void_p]
    lib.llama_vocab_n_tokens.restype = ctypes.c_int32
    lib.llama_free.argtypes = [ctypes.c_void_p]
    lib.llama_model_free.argtypes = [ctypes.c_void_p]
    getattr(lib, _CVEC_LOAD).argtypes = [ctypes.c_void_p, ctypes.c_void_p]  # (sret, const vector&)
    getattr(lib, _CVEC_LOAD).restype = None
    return lib


def load_control_vector(lib: ctypes.CDLL, path: Path, strength: float) -> tuple[int, np.ndarray]:
    """``(n_embd, data)`` as llama.cpp's loader reads ``path`` (data: layers 1.., n_embd each; n_embd -1 on error)."""
    assert ctypes.sizeof(_LoadInfo) == 16
    keep, name = _cow_string(str(path).encode())
    info = _LoadInfo(strength, name)
    end = ctypes.addressof(info) + ctypes.sizeof(info)
    infos = _StdVector(ctypes.addressof(info), end, end)
    out = (ctypes.c_ubyte * 512)()  # common_control_vector_data { int n_embd; std::vector<float> data; ... }
    getattr(lib, _CVEC_LOAD)(ctypes.addressof(out), ctypes.addressof(infos))
    n_embd = ctypes.c_int.from_buffer(out, 0).value
    data = _StdVector.from_buffer(out, 8)
    count = ((data.end or 0) - (data.begin or 0)) // 4
    values = np.ctypeslib.as_array((ctypes.c_float * count).from_address(data.begin)).copy() if count else np.zeros(0)
    del keep
    return n_embd, values.astype(np.float32)  # (llama.cpp's buffer is left to the process: a few bytes)


def load_model(lib: ctypes.CDLL, model_path: Path) -> int:
    """llama.cpp's model (a pointer; free with ``lib.llama_model_free``)."""
    model = lib.llama_model_load_from_file(str(model_path).encode(), lib.llama_model_default_params())
    assert model, f"llama.cpp could not load {model_path}"
    return model


def last_logits(
    lib: ctypes.CDLL, model: int, ids: list[int], control: tuple[int, np.ndarray] | None = None
) -> np.ndarray:
    """The logits llama.cpp computes at the last of ``ids`` in a fresh context, steered by ``control``
    (from :func:`load_control_vector`) over layers 1 .. n_layer as ``llama-cli`` applies it."""
    ctx = lib.llama_init_from_model(model, lib.llama_context_default_params())
    assert ctx, "llama.cpp could not create a context"
    try:
        if control is not None:
            n_embd, data = control
            buffer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            code = lib.llama_set_adapter_cvec(ctx, buffer, data.size, n_embd, 1, lib.llama_model_n_layer(model))
            assert code == 0, f"llama_set_adapter_cvec returned {code}"
        tokens = (ctypes.c_int32 * len(ids))(*ids)
        assert lib.llama_decode(ctx, lib.llama_batch_get_one(tokens, len(ids))) == 0
        vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
        return np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, -1), shape=(vocab,)).copy()
    finally:
        lib.llama_free(ctx)


def main(spec_path: str, out_path: str) -> None:
    """Run the jobs a JSON file lists (``{"model", "ids", "runs": [[control vector or null, strength], ...]}``)
    and save the last position's logits of each, stacked, to ``out_path`` (.npy).

    Run in a subprocess by the tests, so a llama.cpp build whose ABI differs fails one test, not the run.
    """
    import json

    spec = json.loads(Path(spec_path).read_text())
    lib = library()
    assert lib is not None, "xllamacpp is not installed"
    model = load_model(lib, Path(spec["model"]))
    rows = []
    for control, strength in spec["runs"]:
        loaded = None if control is None else load_control_vector(lib, Path(control), strength)
        if loaded is not None:
            assert loaded[0] > 0, f"llama.cpp refused the control vector {control}"
        rows.append(last_logits(lib, model, spec["ids"], loaded))
    lib.llama_model_free(model)
    np.save(out_path, np.stack(rows))


if __name__ == "__main__":
    import sys

    main(sys.argv[1], sys.argv[2])
