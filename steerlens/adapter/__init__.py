"""Turn Hugging Face causal LMs into TransformerLens ``HookedTransformer``s.

``load_model`` loads from a name, folder, GGUF file or loaded model (``load_hf_model`` gives
the plain Hugging Face model for the native route); :mod:`steerlens.adapter.hf_hook_points`
names the HF modules that carry each TransformerLens hook point.
"""

from steerlens.adapter.configs import build_tl_config, tl_config_dict
from steerlens.adapter.hf_hook_points import (
    HFSite,
    describe_architecture,
    hf_module,
    hf_module_path,
    hf_site,
)
from steerlens.adapter.load import convert_hf_model, load_hf_model, load_model
from steerlens.adapter.registry import ARCHITECTURES, ArchSpec, arch_spec, supported_architectures

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "HFSite",
    "arch_spec",
    "build_tl_config",
    "convert_hf_model",
    "describe_architecture",
    "hf_module",
    "hf_module_path",
    "hf_site",
    "load_hf_model",
    "load_model",
    "supported_architectures",
    "tl_config_dict",
]
