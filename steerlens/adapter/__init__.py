"""Turn Hugging Face causal LMs into TransformerLens ``HookedTransformer``s.

``load_model`` loads from a name, folder or loaded model; ``adapt_hf_model`` converts a
loaded model once and caches the result; :mod:`steerlens.adapter.names` maps TL hook
points to the HF modules that carry the same tensors.
"""

from steerlens.adapter.cache import adapt_hf_model
from steerlens.adapter.configs import build_tl_config, tl_config_dict
from steerlens.adapter.hooks import record_hf_activations
from steerlens.adapter.load import convert_hf_model, load_hf_model, load_model
from steerlens.adapter.names import (
    HFSite,
    describe_architecture,
    hf_module,
    hf_module_path,
    hf_site,
    tl_hook_name,
)
from steerlens.adapter.registry import ARCHITECTURES, ArchSpec, arch_spec, supported_architectures

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "HFSite",
    "adapt_hf_model",
    "arch_spec",
    "build_tl_config",
    "convert_hf_model",
    "describe_architecture",
    "hf_module",
    "hf_module_path",
    "hf_site",
    "load_hf_model",
    "load_model",
    "record_hf_activations",
    "supported_architectures",
    "tl_config_dict",
    "tl_hook_name",
]
