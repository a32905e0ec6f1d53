"""Vectors in other tools' formats: the ``steering-vectors`` library, llama.cpp control vectors
(GGUF) and lm-evaluation-harness' ``steered`` model. Each tool's own package is imported only
when its format is written or read."""

from steerlens.interop.llama_cpp import export_gguf, import_gguf
from steerlens.interop.lm_eval import export_lm_eval, lm_eval_steered_model
from steerlens.interop.steering_vectors import from_steering_vectors, to_steering_vectors

__all__ = [
    "export_gguf",
    "from_steering_vectors",
    "import_gguf",
    "lm_eval_steered_model",
    "to_steering_vectors",
    "export_lm_eval",
]
