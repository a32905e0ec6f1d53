"""Loading a converted state dict (with and without weight processing) and keeping it beside a checkpoint."""

from __future__ import annotations

import torch
from helpers import make_model

from steerlens.adapter.weights import hooked_state_fingerprint, load_weights, read_hooked_state, save_hooked_state

TOKENS = torch.tensor([[0, 5, 9, 12, 40, 41, 7]])


def test_load_weights_unprocessed_gives_the_same_model_processed_the_same_log_probs():
    source = make_model(n_layers=2, seed=1)
    state = {key: value.clone() for key, value in source.state_dict().items()}
    with torch.no_grad():
        expected = source(TOKENS).log_softmax(-1)
    plain = make_model(n_layers=2, seed=2)
    load_weights(plain, state, process_weights=False)
    for key, value in source.state_dict().items():
        assert torch.equal(plain.state_dict()[key], value), key
    processed = make_model(n_layers=2, seed=2)
    load_weights(processed, {**state, "not.a.parameter": torch.ones(3)}, process_weights=True)  # extra keys dropped
    assert not torch.equal(processed.blocks[0].attn.W_Q, source.blocks[0].attn.W_Q)  # the layer norm was folded in
    with torch.no_grad():
        torch.testing.assert_close(processed(TOKENS).log_softmax(-1), expected, atol=1e-4, rtol=0)


def test_a_kept_state_round_trips_under_its_fingerprint_only(tmp_path):
    model = make_model(n_layers=1)
    path = tmp_path / "kept.safetensors"
    fingerprint = hooked_state_fingerprint({"d_model": 32, "n_layers": 1})
    save_hooked_state(model, path, fingerprint)
    kept = read_hooked_state(path, fingerprint)
    assert kept is not None and kept.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(kept[key], value), key
    assert read_hooked_state(path, hooked_state_fingerprint({"d_model": 32, "n_layers": 2})) is None
    assert [p.name for p in tmp_path.iterdir()] == ["kept.safetensors"]  # no temporary file left


def test_a_missing_or_garbled_kept_state_is_none(tmp_path):
    fingerprint = hooked_state_fingerprint({})
    assert read_hooked_state(tmp_path / "missing.safetensors", fingerprint) is None
    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert read_hooked_state(garbled, fingerprint) is None


def test_the_fingerprint_follows_the_config_but_not_the_model_name():
    base = {"d_model": 32, "n_layers": 2, "model_name": "a"}
    assert hooked_state_fingerprint(base) == hooked_state_fingerprint({**base, "model_name": "b"})
    assert hooked_state_fingerprint(base) != hooked_state_fingerprint({**base, "d_model": 64})
    assert len(hooked_state_fingerprint(base)) == 64  # a sha256 in hex
