"""The Backend protocol: every backend class provides every member, and the members callers ask
of a model kind (instead of comparing ``kind`` strings or probing the model) answer what the
model itself says."""

from __future__ import annotations

import inspect

import pytest
import torch
from helpers import make_model
from tiny_hf import make_hf_model, make_tokenizer

from steerlens.backends import backend_for, stored_layer_type
from steerlens.backends.bridge import BridgeBackend
from steerlens.backends.hf import HFBackend
from steerlens.backends.hooked import HookedBackend
from steerlens.backends.protocol import Backend
from steerlens.backends.wrapped import WrappedBackend


def protocol_members() -> set[str]:
    members = {name for name in vars(Backend) if not name.startswith("_")}
    return members | set(inspect.get_annotations(Backend))


@pytest.mark.parametrize("cls", [HookedBackend, HFBackend, BridgeBackend, WrappedBackend])
def test_every_backend_class_has_every_protocol_member(cls):
    fields = set(getattr(cls, "__dataclass_fields__", {}))
    missing = sorted(name for name in protocol_members() if not hasattr(cls, name) and name not in fields)
    assert not missing, f"{cls.__name__} lacks Backend members {missing}"


def test_hooked_transformer_answers_from_its_config():
    model = make_model(n_layers=2)
    backend = backend_for(model)
    assert backend.context_length == model.cfg.n_ctx
    assert backend.hooks_modules is False and backend.module_layout is None
    assert backend.stored_layer_type("decoder_block", [0]) == "resid_post"


def test_hf_model_answers_from_its_config_and_module_tree():
    model = make_hf_model("llama")
    backend = backend_for(model, make_tokenizer())
    assert backend.context_length == model.config.max_position_embeddings
    assert backend.hooks_modules is True
    layers = backend.module_layout.layers_path
    assert isinstance(model.get_submodule(layers), torch.nn.ModuleList)
    assert len(model.get_submodule(layers)) == model.config.num_hidden_layers


def test_stored_layer_type_member_agrees_with_the_function():
    """On Gemma 2 a steering-vectors module name carrying another tensor is stored as ``module:<name>``."""
    backend = backend_for(make_hf_model("gemma2"), make_tokenizer())
    for layer_type in ("decoder_block", "post_attention_layernorm", "resid_mid"):
        assert backend.stored_layer_type(layer_type, [0]) == stored_layer_type(backend, layer_type, [0])
    assert backend.stored_layer_type("post_attention_layernorm", [0]).startswith("module:")
