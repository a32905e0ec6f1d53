"""SteeringVector values: arithmetic, selection, similarity, and the safetensors file format."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import join_safetensors, random_vector, split_safetensors

from steerlens import SteeringVector
from steerlens.errors import InvalidArgumentError, LayerError, NonFiniteError, VectorFileError


def test_arithmetic_matches_tensor_arithmetic():
    a, b = random_vector(8, (0, 2), seed=1, scale=1.0), random_vector(8, (2, 3), seed=2, scale=1.0)
    A, B = a.layer_activations, b.layer_activations
    s = a + b
    assert s.layers == [0, 2, 3]
    torch.testing.assert_close(s.layer_activations[2], A[2] + B[2])
    torch.testing.assert_close(s.layer_activations[0], A[0])
    torch.testing.assert_close(s.layer_activations[3], B[3])
    torch.testing.assert_close((a - b).layer_activations[3], -B[3])
    torch.testing.assert_close((a - b).layer_activations[2], A[2] - B[2])
    torch.testing.assert_close((3 * a).layer_activations[0], 3 * A[0])
    torch.testing.assert_close((a * 0.5).layer_activations[2], 0.5 * A[2])
    torch.testing.assert_close((-a).layer_activations[2], -A[2])
    torch.testing.assert_close((a / 4).layer_activations[0], A[0] / 4)
    assert a.layer_activations[0] is A[0] and torch.equal(
        A[0], random_vector(8, (0, 2), seed=1, scale=1.0).layer_activations[0]
    )


def test_to_normalized_select_cosine():
    a, b = random_vector(8, (0, 2), seed=1, scale=1.0), random_vector(8, (0, 2), seed=2, scale=1.0)
    assert a.to(torch.float64).layer_activations[0].dtype == torch.float64
    for v in a.normalized().layer_activations.values():
        assert abs(float(v.norm()) - 1) < 1e-6
    assert a.select_layers([2]).layers == [2]
    with pytest.raises(LayerError, match="not in this vector"):
        a.select_layers([5])
    cos = a.cosine_similarity(b)
    for layer in (0, 2):
        x, y = a.layer_activations[layer], b.layer_activations[layer]
        assert abs(cos[layer] - float(x @ y / (x.norm() * y.norm()))) < 1e-6
    assert a.norms()[0] == pytest.approx(float(a.layer_activations[0].norm()))


def test_invalid_vectors_are_refused():
    with pytest.raises(NonFiniteError, match="NaN"):
        SteeringVector({0: torch.tensor([1.0, float("nan")])})
    with pytest.raises(InvalidArgumentError, match="same d_model"):
        SteeringVector({0: torch.ones(3), 1: torch.ones(4)})
    with pytest.raises(LayerError, match="layer_type"):
        SteeringVector({0: torch.ones(3)}, layer_type="resid")
    with pytest.raises(InvalidArgumentError, match="layer_type"):
        random_vector(8, (0, 2), "resid_pre", scale=1.0) + random_vector(8, (0, 2), scale=1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_save_load_round_trip_is_exact(tmp_path, dtype):
    a = random_vector(16, (1, 3), "mlp_out", scale=1.0, metadata={"model_name": "tiny", "d_model": 16}).to(dtype)
    path = tmp_path / "v.safetensors"
    a.save(path)
    b = SteeringVector.load(path)
    assert b.layer_type == "mlp_out" and b.layers == [1, 3] and b.metadata == a.metadata
    for layer in (1, 3):
        assert b.layer_activations[layer].dtype == dtype
        assert torch.equal(b.layer_activations[layer], a.layer_activations[layer])


def _rewrite_header(path, change):
    header, body = split_safetensors(path.read_bytes())
    change(header)
    path.write_bytes(join_safetensors(header, body, align=True))


def _set_steerlens(key, value):
    def change(header):
        meta = json.loads(header["__metadata__"]["steerlens"])
        meta[key] = value
        header["__metadata__"]["steerlens"] = json.dumps(meta)

    return change


@pytest.mark.parametrize(
    "corrupt, phrase",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:5]), "too short"),
        (lambda p: p.write_bytes(p.read_bytes()[:40]), "longer than the file"),
        (lambda p: p.write_bytes(p.read_bytes()[:-4]), "corrupted"),
        (lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"{not json at all"), "not valid JSON"),
        (lambda p: _rewrite_header(p, lambda h: h.pop("__metadata__")), "not a steerlens vector file"),
        (lambda p: _rewrite_header(p, _set_steerlens("schema_version", 99)), "schema_version"),
        (lambda p: _rewrite_header(p, _set_steerlens("layer_type", "bogus")), "layer_type"),
        (lambda p: _rewrite_header(p, _set_steerlens("layers", [1])), "do not match the layers"),
        (lambda p: _rewrite_header(p, _set_steerlens("d_model", 7)), "expected a float vector"),
        (lambda p: _rewrite_header(p, _set_steerlens("format", "pickle")), "format"),
    ],
)
def test_corrupted_files_give_clear_errors(tmp_path, corrupt, phrase):
    path = tmp_path / "v.safetensors"
    random_vector(16, (1, 3), scale=1.0).save(path)
    corrupt(path)
    with pytest.raises(VectorFileError, match=phrase):
        SteeringVector.load(path)


def test_nan_in_file_and_size_limit(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "v.safetensors"
    random_vector(4, (0,), scale=1.0).save(path)
    good = SteeringVector.load(path)
    meta = split_safetensors(path.read_bytes())[0]["__metadata__"]
    save_file({"layer.0": torch.tensor([1.0, float("inf"), 0.0, 0.0])}, path, metadata=meta)
    with pytest.raises(VectorFileError, match="NaN or inf"):
        SteeringVector.load(path)
    good.save(path)
    with pytest.raises(VectorFileError, match="over the limit"):
        SteeringVector.load(path, max_bytes=10)
    with pytest.raises(VectorFileError, match="cannot read"):
        SteeringVector.load(tmp_path / "missing.safetensors")


def test_select_layers_takes_a_hook_name_as_one_layer():
    """A string is one TransformerLens hook name, not a sequence of characters (issue 30, point 3)."""
    vec = random_vector(8, (1, 2, 12), seed=3, scale=1.0)
    picked = vec.select_layers("blocks.12.hook_resid_post")
    assert picked.layers == [12] and picked.layer_activations[12] is vec.layer_activations[12]
    assert vec.select_layers(["blocks.2.hook_resid_post", 1]).layers == [1, 2]
    with pytest.raises(LayerError, match="hook name 'blocks.2.hook_attn_out' is a attn_out hook") as info:
        vec.select_layers("blocks.2.hook_attn_out")
    assert "the vector's layer_type is 'resid_post'" in str(info.value)
    with pytest.raises(LayerError, match="'b2' is not a whole number or a TransformerLens hook name"):
        vec.select_layers("b2")
    ln = SteeringVector({3: torch.ones(8)}, "input_layernorm")
    assert ln.select_layers("blocks.3.ln1.hook_normalized").layers == [3]


@pytest.mark.parametrize("layer_type", ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "ln1", "ln2"])
def test_hook_names_parse_back_to_the_layer_and_type_they_were_made_from(layer_type):
    from steerlens.layers import hook_name, parse_hook_name

    assert parse_hook_name(hook_name(12, layer_type)) == (12, layer_type)


def test_layer_groups_accept_hook_names_and_check_their_type():
    from steerlens.vector import resolve_layer_groups

    assert resolve_layer_groups("blocks.3.hook_resid_post", [1, 3], 4, "resid_post") == [(3,)]
    assert resolve_layer_groups([["blocks.1.hook_resid_post", 3], -1], [1, 3], 4, "decoder_block") == [(1, 3), (3,)]
    assert resolve_layer_groups("joint", [1, 3], 4) == [(1, 3)]
    with pytest.raises(LayerError, match="'blocks.1.hook_resid_pre' is a resid_pre hook, but layer_type is"):
        resolve_layer_groups(["blocks.1.hook_resid_pre"], [1, 3], 4, "resid_post")
    with pytest.raises(LayerError, match="'joint', a layer or a list"):
        resolve_layer_groups("every", [1, 3], 4)
    with pytest.raises(LayerError, match="out of range"):
        resolve_layer_groups("blocks.7.hook_resid_post", [1, 3], 4, "resid_post")
