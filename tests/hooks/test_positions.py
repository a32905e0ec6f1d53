"""Which positions steering touches: per row from the first real token, with and without a KV cache.

The reference is always the same prompt steered alone (no padding), so a left-padded
batch must steer each row exactly where that row's own prompt is steered, on the
Hugging Face route (positions from ``position_ids`` / the attention mask / the cache)
and on HookedTransformers (TransformerLens' left padding), in forward passes and in
``generate`` with and without a cache.
"""

from __future__ import annotations

import pytest
import torch
from helpers import make_model, random_vector
from tiny_hf import make_hf_model

from steerlens.backends import backend_for, steering_hooks_on
from steerlens.errors import TokenIndexError
from steerlens.hooks import PassPositions, position_mask

PROMPTS = [[1, 5, 9, 12, 4, 20, 7], [1, 8, 8], [1, 3, 40, 41, 6]]
"""Token-id prompts of different lengths (1 = BOS on the tiny HF models)."""
NEW = 5
# As wide as the models' context; irregular, so no padding shift maps it onto itself.
WIDE_MASK = torch.rand(64, generator=torch.Generator().manual_seed(0)) < 0.4
SETTINGS = {
    "min_token_index": dict(min_token_index=3),
    "token_indices list": dict(token_indices=[1, 2, 7, 9]),
    "token_indices slice": dict(token_indices=slice(2, None, 2)),
    "token_indices mask": dict(token_indices=WIDE_MASK),
}
TL_SETTINGS = {**SETTINGS, "min_token_index": dict(min_token_index=12)}
"""The HookedTransformer prompts are longer (9 to 36 tokens)."""


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def hf_forward(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # As generate does: positions from the mask, so absolute position embeddings see each row alone.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits


@pytest.fixture(scope="module")
def hf_models() -> dict:
    return {name: make_hf_model(name) for name in ("gpt2", "llama", "gemma2", "qwen2")}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("name", ["gpt2", "llama", "gemma2", "qwen2"])
def test_hf_left_padded_forward_equals_each_prompt_alone(hf_models, name, setting):
    model = hf_models[name]
    vec = random_vector(32, (0, 1), "resid_post", seed=2, scale=1.0)
    ids, mask = left_pad(PROMPTS, pad=0)
    with vec.apply(model, multiplier=6.0, **SETTINGS[setting]):
        batch = hf_forward(model, ids, mask)
        alone = [hf_forward(model, torch.tensor([p]), torch.ones(1, len(p), dtype=torch.long)) for p in PROMPTS]
    unsteered = hf_forward(model, ids, mask)
    for row, (prompt, single) in enumerate(zip(PROMPTS, alone)):
        torch.testing.assert_close(batch[row, -len(prompt) :], single[0], atol=1e-5, rtol=0)
    assert (batch - unsteered).abs().amax() > 0.1  # the setting steers something
    assert steering_hooks_on(model) == []


def _hf_generate(model, ids, mask, use_cache: bool):
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=NEW,
        min_new_tokens=NEW,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
        use_cache=use_cache,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return out.sequences[:, ids.shape[1] :], torch.stack(out.logits, 1)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("name", ["gpt2", "llama", "gemma2"])
def test_hf_left_padded_generate_equals_each_prompt_alone(hf_models, name, setting, use_cache):
    model = hf_models[name]
    vec = random_vector(32, (0, 1), "resid_post", seed=3, scale=1.0)
    ids, mask = left_pad(PROMPTS, pad=0)
    with vec.apply(model, multiplier=8.0, **SETTINGS[setting]):
        tokens, logits = _hf_generate(model, ids, mask, use_cache)
        for row, prompt in enumerate(PROMPTS):
            single = torch.tensor([prompt])
            alone_tokens, alone_logits = _hf_generate(model, single, torch.ones_like(single), use_cache)
            assert torch.equal(tokens[row], alone_tokens[0]), (row, tokens[row], alone_tokens[0])
            torch.testing.assert_close(logits[row], alone_logits[0], atol=1e-5, rtol=0)
    plain, _ = _hf_generate(model, ids, mask, use_cache)
    assert not torch.equal(plain, tokens)
    assert steering_hooks_on(model) == []


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_hf_pass_positions_follow_each_row_through_generate(hf_models, cache):
    """The positions our pre-hook derives, at every generate step, are each row's own.

    This fails loudly when a transformers release changes what ``generate`` hands the
    model's forward (it did in 5.25: ``cache=`` for ``past_key_values=``).
    """
    model = hf_models["llama"]
    ids, mask = left_pad(PROMPTS, pad=0)
    seen: list[tuple[bool, torch.Tensor]] = []

    def record(positions: PassPositions) -> None:
        width = positions.position_ids.shape[-1] if positions.position_ids is not None else ids.shape[1]
        seen.append((positions.starts_sequence(len(PROMPTS), width), positions.rows(len(PROMPTS), width)))

    handle = backend_for(model, None).watch_passes(0, record)
    try:
        extra = {"cache_implementation": "static"} if cache == "static" else {}
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=3,
            min_new_tokens=3,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
            **extra,
        )
    finally:
        handle.remove()
    lengths = torch.tensor([len(p) for p in PROMPTS])
    assert len(seen) == 3 and seen[0][0] and not seen[1][0] and not seen[2][0]
    real = mask.bool()
    for row, n in enumerate(lengths.tolist()):
        assert seen[0][1][row][real[row]].tolist() == list(range(n))
    for step, (_, rows) in enumerate(seen[1:]):
        assert rows[:, 0].tolist() == (lengths + step).tolist()


@pytest.fixture(scope="module", params=["standard", "rotary"])
def left_model(request):
    return make_model(n_layers=2, padding_side="left", positional_embedding_type=request.param)


def _tl_prompts(model) -> list[torch.Tensor]:
    texts = ["I love this film , it was wonderful", "The food", "What a lovely day"]
    return [model.to_tokens(t)[0] for t in texts]


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_hooked_left_padded_forward_equals_each_prompt_alone(left_model, setting):
    model = left_model
    prompts = _tl_prompts(model)
    vec = random_vector(model, (0, 1), "resid_post", seed=4, scale=2.0)
    ids, mask = left_pad([p.tolist() for p in prompts], pad=model.tokenizer.pad_token_id)
    with torch.no_grad(), vec.apply(model, multiplier=4.0, **TL_SETTINGS[setting]):
        batch = model(ids, attention_mask=mask)
        alone = [model(p[None]) for p in prompts]
    with torch.no_grad():
        unsteered = model(ids, attention_mask=mask)
    for row, (prompt, single) in enumerate(zip(prompts, alone)):
        torch.testing.assert_close(batch[row, -len(prompt) :], single[0], atol=1e-5, rtol=0)
    assert (batch - unsteered).abs().amax() > 0.1
    assert steering_hooks_on(model) == []


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("setting", ["min_token_index", "token_indices slice", "token_indices mask"])
def test_hooked_left_padded_generate_equals_each_prompt_alone(left_model, setting, use_cache):
    model = left_model
    prompts = _tl_prompts(model)
    vec = random_vector(model, (0, 1), "resid_post", seed=5, scale=2.0)
    ids, _ = left_pad([p.tolist() for p in prompts], pad=model.tokenizer.pad_token_id)
    kwargs = dict(
        max_new_tokens=NEW,
        do_sample=False,
        verbose=False,
        stop_at_eos=False,
        use_past_kv_cache=use_cache,
        padding_side="left",
    )
    with vec.apply(model, multiplier=8.0, **TL_SETTINGS[setting]):
        batch = model.generate(ids, **kwargs)[:, ids.shape[1] :]
        alone = [model.generate(p[None], **kwargs)[0, len(p) :] for p in prompts]
    plain = model.generate(ids, **kwargs)[:, ids.shape[1] :]
    for row, single in enumerate(alone):
        assert torch.equal(batch[row], single), (row, batch[row], single)
    assert not torch.equal(plain, batch)
    assert steering_hooks_on(model) == []


def test_pass_positions_from_each_source():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    # The mask of the whole sequence during a cached step: the last column's per-row position.
    assert PassPositions(past=3, attention_mask=mask).rows(2, 1).tolist() == [[1], [3]]
    assert PassPositions(attention_mask=mask).rows(2, 4).tolist() == [[-1, -1, 0, 1], [0, 1, 2, 3]]
    # A mask of this pass's columns only counts on from the cache length.
    assert PassPositions(past=5, attention_mask=torch.ones(2, 2)).rows(2, 2).tolist() == [[5, 6], [5, 6]]
    ids = torch.tensor([[7], [9]])
    assert PassPositions(past=3, position_ids=ids, attention_mask=mask).rows(2, 1).tolist() == [[7], [9]]
    assert PassPositions(past=2).rows(2, 3).tolist() == [[2, 3, 4], [2, 3, 4]]
    assert PassPositions(attention_mask=mask).starts_sequence(2, 4)
    assert not PassPositions(past=4, attention_mask=torch.ones(2, 5)).starts_sequence(2, 1)


def test_a_mask_narrower_than_the_sequence_is_an_error():
    positions = PassPositions(attention_mask=torch.ones(1, 6))
    assert position_mask(positions, 1, 6, 0, torch.ones(6, dtype=torch.bool)).all()
    with pytest.raises(TokenIndexError, match="covers 4 positions but the model runs position 5"):
        position_mask(positions, 1, 6, 0, torch.ones(4, dtype=torch.bool))
    # During generation the sequence grows past a prompt-wide mask: the same error, not silence.
    model = make_hf_model("llama")
    vec = random_vector(32, (0,), "resid_post", scale=1.0)
    prompt = torch.tensor([PROMPTS[0]])
    with pytest.raises(TokenIndexError, match="as wide as the longest sequence"):
        with vec.apply(model, token_indices=torch.ones(prompt.shape[1], dtype=torch.bool)):
            model.generate(prompt, max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert steering_hooks_on(model) == []


def _padded(rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    if side == "left":
        return left_pad(rows, pad=0)
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kind", ["mask", "list", "slice"])
def test_token_indices_steer_only_chosen_real_tokens_on_either_padding_side(hf_models, side, kind):
    # steering-vectors' test_SteeringVector_mask_batched_activations: a [batch, pos] mask on each row's
    # last real token; padding columns share that position (right padding) and must stay unsteered.
    model = hf_models["gpt2"]
    ids, attn = _padded(PROMPTS, side)
    lengths = attn.sum(-1)
    if kind == "mask":
        # Positions count from each row's first real token (steerlens' absolute positions).
        chosen = torch.zeros(ids.shape, dtype=torch.long)
        chosen[range(len(PROMPTS)), lengths - 1] = 1
        token_indices = chosen
    elif kind == "list":
        token_indices = [2]
    else:
        token_indices = slice(1, None, 2)
    layer, vec = 0, random_vector(32, (0,), "resid_post", seed=6, scale=2.0)
    steer = vec.layer_activations[layer]
    # Which columns a hand-written hook steers: real tokens whose own position is chosen.
    position = (attn.cumsum(-1) - 1).clamp(min=0)
    if kind == "mask":
        want = token_indices.bool().gather(1, position)
    elif kind == "list":
        want = position == 2
    else:
        want = (position >= 1) & ((position - 1) % 2 == 0)
    want &= attn.bool()
    assert want.sum() < attn.sum()  # some real tokens stay unsteered

    def by_hand(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + want[..., None] * steer, *output[1:])
        return output + want[..., None] * steer

    with torch.no_grad():
        handle = model.transformer.h[layer].register_forward_hook(by_hand, prepend=True)  # before HF records it
        try:
            expected = model(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states
        finally:
            handle.remove()
        with vec.apply(model, token_indices=token_indices):
            steered = model(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states
    for exp, got in zip(expected, steered):
        torch.testing.assert_close(got, exp, atol=1e-6, rtol=0)
    assert steering_hooks_on(model) == []


def test_hooked_right_padded_mask_steers_only_masked_tokens():
    model = make_model(n_layers=2, padding_side="right")
    texts = ["I love this film , it was wonderful", "The food", "What a lovely day"]
    ids = model.to_tokens(texts, padding_side="right")
    attn = (ids != model.tokenizer.pad_token_id).long()
    attn[:, 0] = 1  # BOS
    lengths = attn.sum(-1)
    chosen = torch.zeros(ids.shape, dtype=torch.bool)
    chosen[range(3), lengths - 1] = True
    vec = random_vector(model, (0,), "resid_post", seed=7, scale=2.0)
    steer = vec.layer_activations[0]
    name = "blocks.0.hook_resid_post"
    with torch.no_grad():
        _, expected = model.run_with_cache(ids, attention_mask=attn, names_filter=[name])
        plain = expected[name]
        with vec.apply(model, token_indices=chosen):
            _, got = model.run_with_cache(ids, attention_mask=attn, names_filter=[name])
    torch.testing.assert_close(got[name], plain + chosen[..., None] * steer, atol=1e-6, rtol=0)
