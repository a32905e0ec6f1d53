"""Layer sweeps: every cell against a naive loop (apply + full forward, one prompt at a time)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_model, make_tokenizer, random_vector

from steerlens import SteeringVector, ablation_operator, logit_diff, prob_mass, sweep_layers, train_steering_vector
from steerlens.backends import steering_hooks_on
from steerlens.errors import InvalidArgumentError, LayerError, ModelMismatchError
from steerlens.evaluation.metrics import argmax_changed, kl_divergence, token_ids
from steerlens.evaluation.sweep import iter_steered_logits

PROMPTS = [
    "I love this film",
    "The food was delicious and the service was kind",
    "sad",
    "What a lovely day for a walk in the park , she said",
]
MULTS = [-3.0, 0.0, 2.0]


def naive_last_logits(model, vec, layer, multiplier, prompt, operator=None):
    """(steered, unsteered) next-token logits of one unpadded prompt."""
    tokens = model.to_tokens(prompt)
    with torch.no_grad():
        clean = model(tokens)[0, -1]
        with vec.select_layers([layer]).apply(model, multiplier=multiplier, operator=operator):
            steered = model(tokens)[0, -1]
    return steered[None], clean[None]


def naive_table(model, vec, prompts, mults, metric, operator=None):
    return {
        (layer, m): torch.cat([metric(*naive_last_logits(model, vec, layer, m, p, operator)) for p in prompts])
        for layer in vec.layers
        for m in mults
    }


def assert_matches_naive(frame, expected, column):
    assert len(frame) == len(expected)
    for row in frame.itertuples():
        want = expected[row.layer, row.multiplier]
        assert getattr(row, column) == pytest.approx(float(want.mean()), abs=1e-5), (row.layer, row.multiplier)
        assert row.n_prompts == len(want)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("which", ["model", "rotary_model"])
def test_cells_equal_naive_loop(request, which, padding_side):
    model = request.getfixturevalue(which)
    vec = random_vector(model, range(model.cfg.n_layers))
    expected = naive_table(model, vec, PROMPTS, MULTS, kl_divergence)
    # batch_size 4 with 3 multipliers: one prompt per pass, so several padded batches are exercised too.
    for batch_size in (4, 32):
        frame = sweep_layers(model, vec, PROMPTS, multipliers=MULTS, batch_size=batch_size, padding_side=padding_side)
        assert list(frame.columns) == ["layer", "multiplier", "kl", "kl_std", "n_prompts"]
        assert frame.attrs["metric"] == "kl"
        assert_matches_naive(frame, expected, "kl")
    assert (frame[frame.multiplier == 0].kl == 0).all()
    assert (frame[frame.multiplier != 0].kl > 1e-3).all()
    assert steering_hooks_on(model) == []


def test_per_prompt_values_and_order(model):
    vec = random_vector(model, [1, 3])
    frame = sweep_layers(model, vec, PROMPTS, multipliers=[2.0, -1.0], per_prompt=True, batch_size=2)
    assert list(frame.columns) == ["layer", "multiplier", "prompt_index", "prompt", "kl"]
    assert len(frame) == 2 * 2 * len(PROMPTS)
    for row in frame.itertuples():
        assert row.prompt == PROMPTS[row.prompt_index]
        steered, clean = naive_last_logits(model, vec, row.layer, row.multiplier, row.prompt)
        assert row.kl == pytest.approx(float(kl_divergence(steered, clean)), abs=1e-5)


@pytest.mark.parametrize("layer_type", ["resid_pre", "mlp_out", "resid_mid"])
def test_other_layer_types_equal_naive_loop(model, layer_type):
    vec = random_vector(model, [0, 2, 3], layer_type=layer_type, seed=4)
    expected = naive_table(model, vec, PROMPTS, MULTS, kl_divergence)
    assert_matches_naive(sweep_layers(model, vec, PROMPTS, multipliers=MULTS, batch_size=5), expected, "kl")


def test_operator_and_layer_subset(model):
    vec = random_vector(model, [0, 1, 2, 3], seed=2)
    op = ablation_operator()
    expected = naive_table(model, vec.select_layers([2, 0]), PROMPTS, [1.0], kl_divergence, operator=op)
    frame = sweep_layers(model, vec, PROMPTS, layers=[2, 0], multipliers=[1.0], operator=op)
    assert frame.layer.tolist() == [0, 2]
    assert_matches_naive(frame, expected, "kl")


def test_training_samples_are_trained_in_one_pass(model, pairs):
    layers = [1, 2]
    frame = sweep_layers(model, pairs, PROMPTS, layers=layers, multipliers=[-2.0, 2.0], train_kwargs={"batch_size": 4})
    vec = train_steering_vector(model, None, pairs, layers=layers)
    expected = naive_table(model, vec, PROMPTS, [-2.0, 2.0], kl_divergence)
    assert_matches_naive(frame, expected, "kl")


def test_token_metrics(model):
    tok = model.tokenizer
    vec = random_vector(model, [1, 2], seed=5)
    texts = (tok.decode([i]) for i in range(30, 120))
    single = next(s for s in texts if len(tok.encode(s, add_special_tokens=False)) == 1)
    pos, neg = [single, 40], [41, 42]
    pos_ids, neg_ids = token_ids(tok, pos), [41, 42]

    def diff(steered, clean):
        lp = torch.log_softmax(steered, -1)
        return lp[:, pos_ids].exp().sum(-1).log() - lp[:, neg_ids].exp().sum(-1).log()

    def mass_change(steered, clean):
        p, q = torch.softmax(steered, -1), torch.softmax(clean, -1)
        return p[:, neg_ids].sum(-1) - q[:, neg_ids].sum(-1)

    for metric, name, reference in (
        (logit_diff(pos, neg), "logit_diff", diff),
        (prob_mass(neg, relative=True), "delta_prob_mass", mass_change),
        ("argmax_changed", "argmax_changed", argmax_changed),
        (lambda s, c: (s - c).abs().amax(-1), "metric", lambda s, c: (s - c).abs().amax(-1)),
    ):
        frame = sweep_layers(model, vec, PROMPTS, multipliers=MULTS, metric=metric)
        assert frame.attrs["metric"] == name and name in frame.columns
        assert_matches_naive(frame, naive_table(model, vec, PROMPTS, MULTS, reference), name)


def test_single_token_logit_diff_is_the_logit_difference():
    steered = torch.randn(3, 10)
    metric = logit_diff(2, 7)
    torch.testing.assert_close(metric(steered, steered), steered[:, 2] - steered[:, 7], atol=1e-5, rtol=0)
    torch.testing.assert_close(logit_diff(2, 7, relative=True)(steered, steered), torch.zeros(3))


def test_unbound_string_metric_explains_itself():
    with pytest.raises(InvalidArgumentError, match="bind"):
        prob_mass(" x")(torch.zeros(1, 4), torch.zeros(1, 4))


def test_bad_arguments(model):
    vec = random_vector(model, [1])
    with pytest.raises(InvalidArgumentError, match="unknown metric"):
        sweep_layers(model, vec, PROMPTS, metric="nope")
    with pytest.raises(InvalidArgumentError, match="one value per prompt"):
        sweep_layers(model, vec, PROMPTS, metric=lambda s, c: s.sum())
    with pytest.raises(InvalidArgumentError, match="distinct"):
        sweep_layers(model, vec, PROMPTS, multipliers=[1, 1])
    with pytest.raises(InvalidArgumentError, match="finite"):
        sweep_layers(model, vec, PROMPTS, multipliers=[float("nan")])
    with pytest.raises(InvalidArgumentError, match="prompts"):
        sweep_layers(model, vec, [])
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        sweep_layers(model, vec, PROMPTS, batch_size=0)
    with pytest.raises(LayerError, match="not in this vector"):
        sweep_layers(model, vec, PROMPTS, layers=[2])
    with pytest.raises(ModelMismatchError, match="d_model"):
        sweep_layers(model, SteeringVector({1: torch.ones(8)}), PROMPTS)


def test_cells_leave_gradients_enabled_for_the_caller(model):
    vec = random_vector(model, [1])
    for cell in iter_steered_logits(model, vec, PROMPTS[:2], multipliers=[1.0]):
        assert torch.is_grad_enabled()
        assert not cell.steered.requires_grad


def test_shortformer_model_takes_the_plain_route():
    model = make_model(n_layers=2, positional_embedding_type="shortformer", seed=6)
    vec = random_vector(model, [0, 1], seed=6)
    expected = naive_table(model, vec, PROMPTS, MULTS, kl_divergence)
    assert_matches_naive(sweep_layers(model, vec, PROMPTS, multipliers=MULTS, batch_size=3), expected, "kl")


def test_huggingface_model_with_its_tokenizer():
    """A transformers model is adapted; cells equal the HF forward with a torch hook on the decoder layer."""
    import transformers as tf

    tok = make_tokenizer()
    torch.manual_seed(0)
    hf = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=len(tok), n_positions=64)).eval()
    vec = SteeringVector({0: torch.randn(32), 1: torch.randn(32)})
    frame = sweep_layers(hf, vec, PROMPTS[:2], multipliers=[-1.0, 1.5], tokenizer=tok, per_prompt=True)

    def last_logits(prompt, layer=None, m=0.0):
        def add(module, args, out):
            delta = m * vec.layer_activations[layer]
            return (out[0] + delta, *out[1:]) if isinstance(out, tuple) else out + delta

        handle = hf.transformer.h[layer].register_forward_hook(add) if layer is not None else None
        try:
            with torch.no_grad():
                return hf(tok(prompt, return_tensors="pt").input_ids).logits[:, -1]
        finally:
            if handle is not None:
                handle.remove()

    for row in frame.itertuples():
        expected = kl_divergence(last_logits(row.prompt, row.layer, row.multiplier), last_logits(row.prompt))
        assert row.kl == pytest.approx(float(expected), abs=1e-5)


def test_an_interrupted_sweep_keeps_the_finished_cells(model):
    """Ctrl-C in a notebook: the cells measured so far come back, with a warning, not a lost hour."""
    vec = random_vector(model, (0, 1, 2))
    calls = []

    def metric(steered, unsteered):
        calls.append(1)
        if len(calls) > 4:
            raise KeyboardInterrupt
        return (steered - unsteered).abs().amax(-1)

    full = sweep_layers(model, vec, PROMPTS[:2], multipliers=[-1.0, 1.0], metric=lambda s, u: (s - u).abs().amax(-1))
    with pytest.warns(RuntimeWarning, match="interrupted"):
        partial = sweep_layers(model, vec, PROMPTS[:2], multipliers=[-1.0, 1.0], metric=metric)
    assert partial.attrs["interrupted"] and not full.attrs["interrupted"]
    assert 0 < len(partial) < len(full)
    merged = partial.merge(full, on=["layer", "multiplier"], suffixes=("", "_full"))
    value = partial.attrs["metric"]
    np.testing.assert_allclose(merged[value], merged[f"{value}_full"])


def test_zero_multiplier_cells_reuse_the_clean_pass_on_hugging_face_models():
    """Adding 0 x the vector changes nothing, so no forward pass is spent on it (the clean pass is shared)."""
    from tiny_hf import make_hf_model
    from tiny_hf import make_tokenizer as make_word_tokenizer

    model, tok = make_hf_model("llama"), make_word_tokenizer()
    vec = SteeringVector({0: torch.randn(32), 1: torch.randn(32)}, "resid_post")
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        frame = sweep_layers(model, vec, ["the cat sat", "a dog ran fast"], multipliers=[-1.0, 0.0, 1.0], tokenizer=tok)
    finally:
        handle.remove()
    assert len(calls) == 1 + 2 * 2  # one clean pass, then two steered cells per layer
    assert (frame[frame.multiplier == 0.0].kl == 0).all() and (frame[frame.multiplier != 0.0].kl > 0).all()


def test_clean_passes_are_reused_across_calls_and_cells_stay_those_of_plain_steering(model, monkeypatch):
    """A second call at a new multiplier runs no clean pass, and every cell still equals the naive loop."""
    from steerlens.backends.hooked import HookedBackend

    calls = []
    real = HookedBackend.sweep_pass

    def counting(self, batch, *args, **kwargs):
        calls.append(tuple(batch.indices))
        return real(self, batch, *args, **kwargs)

    monkeypatch.setattr(HookedBackend, "sweep_pass", counting)
    vec = random_vector(model, [1, 3], seed=5)
    passes: dict = {}
    first = list(iter_steered_logits(model, vec, PROMPTS, multipliers=[2.0], batch_size=2, clean_passes=passes))
    n_first = len(calls)
    second = list(iter_steered_logits(model, vec, PROMPTS, multipliers=[-3.0], batch_size=2, clean_passes=passes))
    n_second = len(calls) - n_first
    other = list(iter_steered_logits(model, vec, PROMPTS[:2], multipliers=[-3.0], batch_size=2, clean_passes=passes))
    plain = list(iter_steered_logits(model, vec, PROMPTS, multipliers=[-3.0], batch_size=2))
    assert n_first == 2 and n_second == 0  # two batches of PROMPTS, each run clean once over both calls
    assert len(calls) == 2 + 1 + 2  # PROMPTS[:2] is another batch (other tokens); no dict: every batch again
    assert len(passes) == 3
    for cells, mult in ((first, 2.0), (second, -3.0), (other, -3.0), (plain, -3.0)):
        assert len(cells) == 2 * (2 if cells is not other else 1)
        for cell in cells:
            assert cell.multiplier == mult
            for row, index in enumerate(cell.indices):
                steered, clean = naive_last_logits(model, vec, cell.layer, mult, PROMPTS[index])
                torch.testing.assert_close(cell.steered[row], steered[0], atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(cell.unsteered[row], clean[0], atol=1e-4, rtol=1e-4)


# -- damage beside the effect: kl, the metric tokens' mass and the degenerate flag ----------------

SHARP_HF_PROMPTS = ["the cat sat on", "a dog ran fast and", "the big red", "a small happy dog"]


def sharp_tiny_llama():
    """A tiny HF Llama whose unembedding is scaled up 4x, so a pushed residual picks a few tokens (as
    a real model's does); the word tokenizer's words are single tokens after any prompt."""
    from tiny_hf import make_hf_model
    from tiny_hf import make_tokenizer as make_word_tokenizer

    model = make_hf_model("llama")
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    return model, make_word_tokenizer()


def damage_case(route, toy):
    """(model, tokenizer, prompts, layer, positive ids, negative ids, metric, by_hand(prompt, layer, delta))."""
    from helpers import hf_logprobs, hooked_logprobs

    from steerlens import prob_share

    if route == "hooked":
        from steerlens.toy import concept_words, neutral_prompts

        words = concept_words("sentiment")
        pos, neg = (
            [toy.to_single_token(w) for w in words["positive"]],
            [toy.to_single_token(w) for w in words["negative"]],
        )
        prompts = neutral_prompts("sentiment", "test")[:4]

        def by_hand(prompt, layer, delta):
            return hooked_logprobs(
                toy, toy.to_tokens(prompt)[0].tolist(), {layer: delta} if delta is not None else None
            )[-1]

        return toy, None, prompts, 2, pos, neg, prob_share(words["positive"], words["negative"]), by_hand
    model, tok = sharp_tiny_llama()
    pos_words, neg_words = ["happy", "cat", "mat", "big"], ["ran", "sad", "small"]
    pos, neg = tok.convert_tokens_to_ids(pos_words), tok.convert_tokens_to_ids(neg_words)

    def by_hand(prompt, layer, delta):
        return hf_logprobs(model, tok(prompt)["input_ids"], {layer: delta} if delta is not None else None)[-1]

    metric = prob_share([" " + w for w in pos_words], [" " + w for w in neg_words])
    return model, tok, SHARP_HF_PROMPTS, 0, pos, neg, metric, by_hand


def typical_residual_norm(model, tok, prompts, layer) -> float:
    """Mean norm of the residual stream after ``layer`` over every position of the prompts, read by hand."""
    norms = []
    for prompt in prompts:
        with torch.no_grad():
            if tok is None:
                _, cache = model.run_with_cache(model.to_tokens(prompt), names_filter=f"blocks.{layer}.hook_resid_post")
                norms.append(cache[f"blocks.{layer}.hook_resid_post"][0].norm(dim=-1))
            else:
                out = model(tok(prompt, return_tensors="pt").input_ids, output_hidden_states=True)
                norms.append(out.hidden_states[layer + 1][0].norm(dim=-1))
    return float(torch.cat(norms).mean())


@pytest.mark.parametrize("route", ["hooked", "hf"])
def test_a_large_random_direction_is_flagged_degenerate_as_computed_by_hand(request, route):
    """50x the typical residual norm along a random direction: the metric's tokens lose their mass; the cell
    is flagged, and every damage column equals softmax + KL of a plain forward with a hand-written hook."""
    toy = request.getfixturevalue("toy") if route == "hooked" else None
    model, tok, prompts, layer, pos, neg, metric, by_hand = damage_case(route, toy)
    d_model = model.cfg.d_model if tok is None else model.config.hidden_size
    direction = torch.randn(d_model, generator=torch.Generator().manual_seed(0))
    vec = SteeringVector({layer: direction / direction.norm() * typical_residual_norm(model, tok, prompts, layer)})
    mults = [0.05, 50.0]
    kwargs = {} if tok is None else {"tokenizer": tok}
    with pytest.warns(RuntimeWarning, match=r"(\d+) of 8 rows are degenerate") as rows_warning:
        rows = sweep_layers(model, vec, prompts, multipliers=mults, metric=metric, per_prompt=True, **kwargs)
    with pytest.warns(RuntimeWarning, match=r"1 of 2 cells are degenerate"):
        cells = sweep_layers(model, vec, prompts, multipliers=mults, metric=metric, **kwargs)

    assert list(rows.columns) == [
        "layer",
        "multiplier",
        "prompt_index",
        "prompt",
        "prob_share",
        "kl",
        "target_mass",
        "target_mass_unsteered",
        "degenerate",
    ]
    ids = pos + neg
    hand: dict[float, list[tuple[float, float, float, float]]] = {m: [] for m in mults}
    for row in rows.itertuples():
        after = by_hand(row.prompt, layer, row.multiplier * vec.layer_activations[layer])
        before = by_hand(row.prompt, layer, None)
        p, q = after.exp(), before.exp()
        mass, mass_un = float(p[ids].sum()), float(q[ids].sum())
        kl = float((p * (after - before)).sum())
        assert row.prob_share == pytest.approx(float(p[pos].sum()) / mass, abs=1e-5)
        assert row.kl == pytest.approx(kl, abs=1e-4, rel=1e-4)
        assert row.target_mass == pytest.approx(mass, abs=1e-6, rel=1e-4)
        assert row.target_mass_unsteered == pytest.approx(mass_un, abs=1e-6, rel=1e-4)
        assert row.degenerate == (mass < 0.1 * mass_un)
        hand[row.multiplier].append((float(p[pos].sum()) / mass, kl, mass, mass_un))
    flagged_rows = int(rows.degenerate.sum())
    assert f"{flagged_rows} of 8 rows" in str(rows_warning[0].message)

    assert list(cells.columns) == [
        "layer",
        "multiplier",
        "prob_share",
        "prob_share_std",
        "n_prompts",
        "kl",
        "target_mass",
        "target_mass_unsteered",
        "degenerate",
    ]
    for cell in cells.itertuples():
        share, kl, mass, mass_un = (float(np.mean(column)) for column in zip(*hand[cell.multiplier]))
        assert cell.prob_share == pytest.approx(share, abs=1e-5)
        assert cell.kl == pytest.approx(kl, abs=1e-4, rel=1e-4)
        assert cell.target_mass == pytest.approx(mass, abs=1e-6, rel=1e-4)
        assert cell.target_mass_unsteered == pytest.approx(mass_un, abs=1e-6, rel=1e-4)
        assert cell.degenerate == (mass < 0.1 * mass_un)
    small, large = cells.set_index("multiplier").degenerate[0.05], cells.set_index("multiplier").degenerate[50.0]
    assert not small and large  # a small push keeps the words' mass; 50 residual norms do not
    assert cells.set_index("multiplier").kl[50.0] > 1.0 > cells.set_index("multiplier").kl[0.05]


def test_metrics_that_read_no_tokens_get_kl_but_no_mass(model):
    vec = random_vector(model, [1])
    frame = sweep_layers(model, vec, PROMPTS, multipliers=[2.0], metric="argmax_changed", per_prompt=True)
    assert list(frame.columns) == ["layer", "multiplier", "prompt_index", "prompt", "argmax_changed", "kl"]
    for row in frame.itertuples():
        steered, clean = naive_last_logits(model, vec, 1, 2.0, row.prompt)
        assert row.kl == pytest.approx(float(kl_divergence(steered, clean)), abs=1e-5)


def test_a_metric_returning_nan_is_named_in_a_warning(model):
    """Issue 28 item 10: a metric returning NaN used to fill the table silently."""
    vec = random_vector(model, [1])

    def half_nan(steered, unsteered):
        values = kl_divergence(steered, unsteered)
        values[::2] = float("nan")
        return values

    with pytest.warns(RuntimeWarning, match=r"metric 'half_nan' returned NaN for 2 of 4 prompts"):
        frame = sweep_layers(model, vec, PROMPTS, multipliers=[1.0], metric=half_nan, batch_size=4, per_prompt=True)
    assert frame.half_nan.isna().sum() == 2
    for row in frame[frame.half_nan.notna()].itertuples():  # the others are still measured
        assert row.half_nan == pytest.approx(float(kl_divergence(*naive_last_logits(model, vec, 1, 1.0, row.prompt))))


DISTRIBUTED_WORKER = """
import sys, torch, torch.distributed as dist
sys.path[:0] = {paths!r}
from test_sweep import SHARP_HF_PROMPTS, distributed_case
from steerlens import sweep_layers
dist.init_process_group("gloo")
rank = dist.get_rank()
model, tok, vec, metric = distributed_case()
prompts = SHARP_HF_PROMPTS[:1] if rank == 0 else SHARP_HF_PROMPTS[1:]  # uneven shards, in rank order
for per_prompt in (True, False):
    frame = sweep_layers(model, vec, prompts, multipliers=[0.05, 50.0], metric=metric, tokenizer=tok,
                         per_prompt=per_prompt, distributed=True)
    frame.to_csv(f"{{sys.argv[1]}}/sweep-{{per_prompt}}-{{rank}}.csv", index=False)
dist.destroy_process_group()
"""


def distributed_case():
    """The sharp tiny Llama, a random direction at 6 (about its residual norm) on layers 0 and 1, a share."""
    from steerlens import prob_share

    model, tok = sharp_tiny_llama()
    direction = torch.randn(32, generator=torch.Generator().manual_seed(0))
    vec = SteeringVector({0: direction / direction.norm() * 6, 1: direction / direction.norm() * 6})
    return model, tok, vec, prob_share([" happy", " cat", " mat", " big"], [" ran", " sad", " small"])


@pytest.mark.slow
def test_distributed_sweeps_keep_the_damage_columns(tmp_path):
    """Two Gloo ranks, each on its share of the prompts, give every rank the single-process table, damage too."""
    from pathlib import Path

    import pandas as pd
    from helpers import run_gloo_ranks

    here = Path(__file__).resolve()
    code = DISTRIBUTED_WORKER.format(paths=[str(here.parents[1]), str(here.parent), str(here.parents[2])])
    run_gloo_ranks(code, tmp_path)
    model, tok, vec, metric = distributed_case()
    for per_prompt in (True, False):
        with pytest.warns(RuntimeWarning, match="degenerate"):
            single = sweep_layers(
                model,
                vec,
                SHARP_HF_PROMPTS,
                multipliers=[0.05, 50.0],
                metric=metric,
                tokenizer=tok,
                per_prompt=per_prompt,
            )
        assert single["degenerate"].any() and not single["degenerate"].all()
        for rank in (0, 1):
            got = pd.read_csv(tmp_path / f"sweep-{per_prompt}-{rank}.csv")
            assert list(got.columns) == list(single.columns) and len(got) == len(single)
            assert got["degenerate"].tolist() == single["degenerate"].tolist()
            for column in ("prob_share", "kl", "target_mass", "target_mass_unsteered"):
                assert got[column].to_numpy() == pytest.approx(single[column].to_numpy(), abs=1e-6, rel=1e-6), column
