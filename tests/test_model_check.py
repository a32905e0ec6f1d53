"""Which model a vector belongs to: a weight fingerprint decides, not the model's name.

A vector trained on one load of a checkpoint applies silently to any other load of it
(native Hugging Face or converted HookedTransformer, processed weights, another dtype);
a different model warns even when it has the same name. ``ln1``/``ln2`` vectors also warn
when they cross between the two kinds of model, which read those sites differently.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny_hf import make_hf_model, make_tokenizer, save_checkpoint

from steerlens import SteeringVector, load_model, train_steering_vector
from steerlens.adapter import convert_hf_model
from steerlens.errors import LayerRouteWarning, ModelNameWarning
from steerlens.vector import FINGERPRINT_KEY, model_fingerprint

PAIRS = [("the cat sat on the mat", "the dog ran fast"), ("a big happy cat", "a small sad dog")]


def steer_warnings(vec: SteeringVector, model) -> list[warnings.WarningMessage]:
    """The steerlens warnings raised while ``vec`` steers ``model``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with vec.apply(model, multiplier=2.0):
            pass
    return [w for w in caught if issubclass(w.category, (ModelNameWarning, LayerRouteWarning))]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The notebook-04 situation: an in-memory HF model, and its HookedTransformer loaded from a folder."""
    folder = tmp_path_factory.mktemp("tiny-gpt2-")
    hf = save_checkpoint("gpt2", folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        tl = load_model(folder)
    return hf, tl


def test_same_checkpoint_under_other_names_does_not_warn(checkpoint):
    hf, tl = checkpoint
    vec = train_steering_vector(tl, None, PAIRS, layers=[1], layer_type="resid_post")
    assert vec.metadata["model_name"] != "gpt2"  # the folder's name; the in-memory HF model is 'gpt2'
    assert steer_warnings(vec, hf) == []
    assert steer_warnings(vec, tl) == []
    hf_vec = train_steering_vector(hf, make_tokenizer(), PAIRS, layers=[1], layer_type="resid_post")
    assert steer_warnings(hf_vec, tl) == []
    # Other loads of the same weights: processed (centred, folded) or in bfloat16.
    assert steer_warnings(vec, convert_hf_model(hf, process_weights=True)) == []
    assert steer_warnings(vec, convert_hf_model(hf, dtype=torch.bfloat16)) == []


def test_other_model_with_the_same_name_warns(checkpoint):
    hf, _ = checkpoint
    other = make_hf_model("gpt2", seed=1)
    assert other.config.model_type == hf.config.model_type == "gpt2"
    vec = train_steering_vector(hf, make_tokenizer(), PAIRS, layers=[1])
    caught = steer_warnings(vec, other)
    assert [w.category for w in caught] == [ModelNameWarning]
    assert "token embeddings differ" in str(caught[0].message)
    assert steer_warnings(vec, convert_hf_model(other)) != []


def test_fingerprint_is_saved_and_small(checkpoint, tmp_path):
    hf, tl = checkpoint
    vec = train_steering_vector(tl, None, PAIRS, layers=[1])
    vec.save(tmp_path / "v.safetensors")
    back = SteeringVector.load(tmp_path / "v.safetensors")
    assert back.metadata[FINGERPRINT_KEY] == model_fingerprint(tl)
    assert len(back.metadata[FINGERPRINT_KEY]["embedding"]) == 32
    assert steer_warnings(back, make_hf_model("gpt2", seed=1)) != []


def test_vectors_without_a_fingerprint_fall_back_to_names(checkpoint, tmp_path):
    hf, tl = checkpoint
    vec = train_steering_vector(tl, None, PAIRS, layers=[1])
    old = SteeringVector(
        vec.layer_activations,
        vec.layer_type,
        {k: v for k, v in vec.metadata.items() if k not in (FINGERPRINT_KEY, "backend")},
    )
    old.save(tmp_path / "old.safetensors")
    old = SteeringVector.load(tmp_path / "old.safetensors")
    assert steer_warnings(old, tl) == []
    assert [w.category for w in steer_warnings(old, hf)] == [ModelNameWarning]  # only the names to go by
    damaged = SteeringVector(vec.layer_activations, vec.layer_type, {**old.metadata, FINGERPRINT_KEY: "x"})
    assert steer_warnings(damaged, tl) == []


def test_ln1_vector_crossing_model_kinds_warns(checkpoint, tmp_path):
    hf, tl = checkpoint
    hf_vec = train_steering_vector(hf, make_tokenizer(), PAIRS, layers=[1], layer_type="ln1")
    assert hf_vec.metadata["backend"] == "hf"
    hf_vec.save(tmp_path / "ln1.safetensors")
    hf_vec = SteeringVector.load(tmp_path / "ln1.safetensors")
    caught = steer_warnings(hf_vec, tl)
    assert [w.category for w in caught] == [LayerRouteWarning]
    assert "before the norm's gain" in str(caught[0].message)
    assert steer_warnings(hf_vec, hf) == []
    tl_vec = train_steering_vector(tl, None, PAIRS, layers=[0], layer_type="ln2")
    assert tl_vec.metadata["backend"] == "hooked"
    assert [w.category for w in steer_warnings(tl_vec, hf)] == [LayerRouteWarning]
    # Residual sites are read alike on both kinds: no warning.
    resid = train_steering_vector(hf, make_tokenizer(), PAIRS, layers=[1], layer_type="resid_mid")
    assert steer_warnings(resid, tl) == []
