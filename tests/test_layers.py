"""Layer types, hook names and layer lists (``steerlens/layers.py``), checked against a real
HookedTransformer's own hook points and hand-computed index arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_model

from steerlens.errors import LayerError
from steerlens.layers import (
    ALIASES,
    MODULE_LAYER_TYPES,
    TL_LAYER_TYPES,
    as_layer_index,
    check_layer_type,
    hook_name,
    hook_name_layer,
    module_name,
    parse_hook_name,
    resolve_layers,
)

N_LAYERS = 3


@pytest.fixture(scope="module")
def model():
    return make_model(n_layers=N_LAYERS)


def test_every_hook_name_is_a_hook_point_of_the_model(model):
    """``hook_name`` names a hook the model has, for every canonical and steering-vectors layer type."""
    for layer in range(N_LAYERS):
        for layer_type in (*TL_LAYER_TYPES, *ALIASES):
            assert hook_name(layer, layer_type) in model.hook_dict, (layer, layer_type)


def test_hook_name_reads_the_tensor_of_its_layer_type(model):
    """``resid_post`` of layer L is what layer L+1 reads as ``resid_pre`` (the model's own cache says so)."""
    _, cache = model.run_with_cache(torch.tensor([[1, 5, 7, 9]]))
    for layer in range(N_LAYERS - 1):
        assert torch.equal(cache[hook_name(layer, "resid_post")], cache[hook_name(layer + 1, "resid_pre")])
    assert torch.equal(cache[hook_name(0, "decoder_block")], cache["blocks.0.hook_resid_post"])


def test_parse_hook_name_inverts_hook_name_on_every_layer_hook_of_the_model(model):
    layer_hooks = [name for name in model.hook_dict if name.startswith("blocks.")]
    parsed = {}
    for name in layer_hooks:
        try:
            parsed[name] = parse_hook_name(name)
        except LayerError:
            continue  # hook_q, hook_z, ...: not a site steerlens reads at
    assert len(parsed) == N_LAYERS * len(TL_LAYER_TYPES)
    for name, (layer, layer_type) in parsed.items():
        assert hook_name(layer, layer_type) == name


@pytest.mark.parametrize("name", ["blocks.0.attn.hook_z", "hook_embed", "blocks.x.hook_resid_post", 3])
def test_other_hooks_are_layer_errors(name):
    with pytest.raises(LayerError, match="TransformerLens hook name"):
        parse_hook_name(name)


def test_layer_type_names():
    assert {check_layer_type(alias) for alias in ALIASES} == set(ALIASES.values())
    assert all(check_layer_type(name) == name for name in (*TL_LAYER_TYPES, *MODULE_LAYER_TYPES))
    assert [module_name(name) for name in ("mlp", "module:mlp", "decoder_block", "resid_post")] == [
        "mlp",
        "mlp",
        None,
        None,
    ]
    with pytest.raises(LayerError, match="unknown layer_type 'resid'"):
        check_layer_type("resid")
    with pytest.raises(LayerError, match="no such module"):
        hook_name(0, "module:mlp")


def test_a_hook_name_of_another_layer_type_is_refused():
    assert hook_name_layer("blocks.2.hook_resid_post", "decoder_block") == 2
    with pytest.raises(LayerError, match="mlp_out hook, but layer_type is 'resid_post'"):
        hook_name_layer("blocks.2.hook_mlp_out", "resid_post")


@pytest.mark.parametrize(
    "value, expected",
    [(2, 2), (np.int64(2), 2), (np.float64(2.0), 2), (torch.tensor(2), 2), ("blocks.1.hook_resid_post", 1)],
)
def test_as_layer_index_takes_whole_numbers_of_any_kind(value, expected):
    assert as_layer_index(value) == expected and type(as_layer_index(value)) is int


@pytest.mark.parametrize("value", [2.5, True, torch.tensor(True), "two", None])
def test_as_layer_index_refuses_what_is_not_a_whole_number(value):
    with pytest.raises(LayerError):
        as_layer_index(value)


@pytest.mark.parametrize(
    "layers",
    [None, 0, -1, [0, -1], [-3, 1], np.array([2, 0]), torch.tensor([-2]), ["blocks.2.hook_resid_post", 0]],
)
def test_resolve_layers_counts_negative_layers_from_the_end(layers):
    n = N_LAYERS
    if layers is None:
        expected = list(range(n))
    else:
        items = [layers] if np.ndim(layers) == 0 else list(layers)
        expected = [int(str(i).split(".")[1]) if isinstance(i, str) else (int(i) + n) % n for i in items]
    assert resolve_layers(layers, n, "resid_post") == expected


@pytest.mark.parametrize(
    "layers, phrase",
    [
        ([], "empty"),
        ([3], "out of range"),
        ([-4], "out of range"),
        ([1, -2], "requested twice"),
        (b"1", "must be an int"),
    ],
)
def test_resolve_layers_refuses_bad_lists(layers, phrase):
    with pytest.raises(LayerError, match=phrase):
        resolve_layers(layers, N_LAYERS)
