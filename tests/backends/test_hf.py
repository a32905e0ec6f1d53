"""The native HF backend's sweep pass: steered cells resume from the clean layer outputs.

Each cell must equal the plain route (steer, run the whole model, read the last token's
logits) on every architecture and layer type, while the layers before the steered site
do no work.
"""

from __future__ import annotations

import pytest
import torch
from tiny_hf import INPUT_IDS, NEW_ARCHITECTURES, ORIGINAL_ARCHITECTURES, make_hf_model, make_tokenizer

from steerlens.backends import backend_for
from steerlens.errors import LayerError
from steerlens.hooks import make_spec
from steerlens.tokens import PromptBatch
from steerlens.tokens.batching import iter_batches

LAYER_TYPES = ("resid_post", "resid_pre", "attn_out", "mlp_out", "ln2")


def _batch(backend, padding_side: str) -> PromptBatch:
    rows = [INPUT_IDS[0].tolist(), INPUT_IDS[1, :7].tolist(), INPUT_IDS[1, 2:].tolist()]
    return next(iter_batches(rows, len(rows), backend.pad_id, padding_side, "cpu"))


def _plain_logits(model, batch: PromptBatch) -> torch.Tensor:
    """The naive route: the whole model, logits at every position, then each row's last real token."""
    inputs = {"input_ids": batch.tokens, "attention_mask": batch.attention_mask}
    if batch.padded.padding_side == "left":
        inputs["position_ids"] = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(**inputs).logits
    return logits[torch.arange(len(batch.last)), batch.last]


CASES = [(name, "right") for name in ORIGINAL_ARCHITECTURES + NEW_ARCHITECTURES] + [
    (name, "left") for name in ("gpt2", "llama", "gemma2", "falcon")  # left padding: shifted position ids
]


@pytest.mark.parametrize(("name", "padding_side"), CASES)
def test_sweep_cells_equal_the_whole_steered_model(name: str, padding_side: str):
    model = make_hf_model(name)
    backend = backend_for(model, make_tokenizer())
    batch = _batch(backend, padding_side)
    d, n = backend.d_model, backend.n_layers
    torch.manual_seed(1)
    for layer_type in LAYER_TYPES:
        try:
            backend.check_sites([(layer, layer_type) for layer in range(n)])
        except LayerError:
            continue  # e.g. Bloom's attention adds the residual itself: no attn_out
        vectors = {layer: torch.randn(d) for layer in range(n)}
        sweep = backend.sweep_pass(batch, list(range(n)), layer_type)
        with torch.no_grad():
            torch.testing.assert_close(sweep.clean, _plain_logits(model, batch), atol=1e-4, rtol=1e-4)
        for layer in range(n):
            specs = [make_spec({layer: vectors[layer]}, layer_type, m, None, 1, None) for m in (-2.0, 1.5)]
            cells = sweep.steered(layer, specs)  # two cells in a row: the kept outputs must stay clean
            for spec, cell in zip(specs, cells):
                with backend.apply(spec), torch.no_grad():
                    expected = _plain_logits(model, batch)
                assert not torch.allclose(expected, sweep.clean, atol=1e-3), (layer_type, layer)
                torch.testing.assert_close(cell, expected, atol=1e-4, rtol=1e-4, msg=f"{layer_type} {layer}")
    assert backend.steering_hooks() == []
    assert all("forward" not in module.__dict__ for module in model.modules())


def test_steered_cells_skip_the_layers_before_the_site():
    """A resid_post cell at the last layer runs no earlier layer; a resid_pre cell there runs only that layer."""
    model = make_hf_model("llama")
    backend = backend_for(model, make_tokenizer())
    batch = _batch(backend, "right")
    decoder = model.model.layers
    calls = [0] * len(decoder)
    for i, layer in enumerate(decoder):
        layer.self_attn.register_forward_pre_hook(lambda m, a, i=i: calls.__setitem__(i, calls[i] + 1))
    last = len(decoder) - 1
    sweep = backend.sweep_pass(batch, [last], "resid_post")
    assert calls == [1] * len(decoder)
    sweep.steered(last, [make_spec({last: torch.randn(backend.d_model)}, "resid_post", 1.0, None, 0, None)])
    assert calls == [1] * len(decoder)
    sweep = backend.sweep_pass(batch, [last], "resid_pre")
    sweep.steered(last, [make_spec({last: torch.randn(backend.d_model)}, "resid_pre", 1.0, None, 0, None)])
    assert calls[:last] == [2] * last and calls[last] == 3
