"""attribute_steering: the split adds up to the measured change, the readout is the hand projection,
freezing the final norm's scale leaves no residual, patching agrees with the contributions, and the
Hugging Face route gives the HookedTransformer's numbers on the same weights.

Every reference is computed here by hand: TransformerLens' ``run_with_cache`` / ``run_with_hooks``
with hand-written hooks, the final LayerNorm's formula, the metric from ``log_softmax``.
"""

from __future__ import annotations

import matplotlib
import pytest
import torch
from helpers import llama_model, llama_prompt, make_model, metaspace_tokenizer, random_vector, steered_logits_by_hand
from tiny_hf import make_hf_model
from tiny_hf import make_tokenizer as word_tokenizer

import steerlens
from steerlens import SteeringVector, logit_diff, train_steering_vector
from steerlens.errors import InvalidArgumentError, LayerError
from steerlens.evaluation.attribution import AttributionWarning, attribute_steering, plot_attribution

matplotlib.use("Agg")

LAYER, MULT = 1, 3.0
POS, NEG = 40, 41  # token ids of the tiny model's vocabulary
IDS = [[0, 12, 30, 44, 51, 7], [0, 60, 9, 33], [0, 5, 5, 70, 81, 90, 14, 3], [0, 101, 2]]


@pytest.fixture(scope="module")
def tiny():
    return make_model(n_layers=4, seed=3)


@pytest.fixture(scope="module")
def vec(tiny):
    return random_vector(tiny, [LAYER], seed=1, scale=1.0)


def by_hand_diff(logits: torch.Tensor, pos: int = POS, neg: int = NEG) -> float:
    logprobs = torch.log_softmax(logits.detach().float(), -1)
    return float(logprobs[pos] - logprobs[neg])


def test_parts_add_up_to_the_measured_change(tiny, vec):
    frame = attribute_steering(tiny, vec, IDS, MULT, logit_diff(POS, NEG), per_prompt=True, batch_size=3)
    assert set(frame.component) == {"direct", "head", "mlp", "residual"}
    # Components after the steered layer only: heads and MLPs of layers 2 and 3.
    assert sorted(set(frame[frame.component != "residual"].layer)) == [1, 2, 3]
    assert set(frame[frame.component == "mlp"].layer) == {2, 3}
    assert set(frame[frame.component == "head"]["head"]) == {0, 1, 2, 3}
    for index, ids in enumerate(IDS):
        unsteered = tiny(torch.tensor([ids]))[0, -1]
        steered = steered_logits_by_hand(tiny, vec, LAYER, MULT, ids)[-1]
        change = by_hand_diff(steered) - by_hand_diff(unsteered)
        rows = frame[frame.prompt_index == index]
        assert rows.contribution.sum() == pytest.approx(change, abs=1e-5)
        assert rows.share.sum() == pytest.approx(1.0, abs=1e-5)
    mean = attribute_steering(tiny, vec, IDS, MULT, logit_diff(POS, NEG))
    assert mean.contribution.sum() == pytest.approx(mean.attrs["change"], abs=1e-6)
    assert mean.attrs["change"] == pytest.approx(frame.groupby("prompt_index").contribution.sum().mean(), abs=1e-6)


def test_contributions_are_the_hand_projection_through_the_frozen_final_norm(tiny, vec):
    """Each part is (its Δoutput) · (W_U[:, pos] − W_U[:, neg]) read through ln_final at the steered scale."""
    ids = torch.tensor([IDS[0]])
    name = f"blocks.{LAYER}.hook_resid_post"
    steer = (name, lambda act, hook: act + MULT * vec.layer_activations[LAYER])
    wanted = lambda n: n.endswith(("hook_z", "hook_mlp_out")) or n == "ln_final.hook_scale"  # noqa: E731
    with torch.no_grad():
        _, clean = tiny.run_with_cache(ids, names_filter=wanted)
        with tiny.hooks(fwd_hooks=[steer]):
            _, steered = tiny.run_with_cache(ids, names_filter=wanted)
    scale = steered["ln_final.hook_scale"][0, -1, 0]
    direction = (tiny.ln_final.w * (tiny.W_U[:, POS] - tiny.W_U[:, NEG])).detach()
    read = lambda delta: float((delta - delta.mean()) @ direction / scale)  # noqa: E731  LayerNorm centres

    frame = attribute_steering(tiny, vec, IDS[:1], MULT, logit_diff(POS, NEG))
    got = {name: value for name, value in zip(frame.name, frame.contribution)}
    assert got[f"direct@{LAYER}"] == pytest.approx(read(MULT * vec.layer_activations[LAYER]), abs=1e-5)
    for layer in (2, 3):
        delta = steered[f"blocks.{layer}.hook_mlp_out"][0, -1] - clean[f"blocks.{layer}.hook_mlp_out"][0, -1]
        assert got[f"mlp{layer}"] == pytest.approx(read(delta), abs=1e-5)
        for head in range(4):
            z = steered[f"blocks.{layer}.attn.hook_z"][0, -1, head] - clean[f"blocks.{layer}.attn.hook_z"][0, -1, head]
            assert got[f"L{layer}H{head}"] == pytest.approx(read(z @ tiny.W_O[layer, head].detach()), abs=1e-5)


def test_with_the_final_norm_scale_frozen_the_residual_vanishes(tiny, vec):
    frozen_total, changes = [], []
    for ids in IDS:
        tokens = torch.tensor([ids])
        steer = (f"blocks.{LAYER}.hook_resid_post", lambda act, hook: act + MULT * vec.layer_activations[LAYER])
        with torch.no_grad():
            with tiny.hooks(fwd_hooks=[steer]):
                steered_logits, cache = tiny.run_with_cache(tokens, names_filter="ln_final.hook_scale")
            scale = cache["ln_final.hook_scale"]
            frozen = tiny.run_with_hooks(tokens, fwd_hooks=[("ln_final.hook_scale", lambda act, hook: scale)])
            plain = tiny(tokens)
        frozen_total.append(by_hand_diff(steered_logits[0, -1]) - by_hand_diff(frozen[0, -1]))
        changes.append(by_hand_diff(steered_logits[0, -1]) - by_hand_diff(plain[0, -1]))
    frame = attribute_steering(tiny, vec, IDS, MULT, logit_diff(POS, NEG), per_prompt=True)
    parts = frame[frame.component != "residual"].groupby("prompt_index").contribution.sum()
    residual = frame[frame.component == "residual"].set_index("prompt_index").contribution
    for index in range(len(IDS)):
        assert parts[index] == pytest.approx(frozen_total[index], abs=1e-5)  # the linear split is exact there
        assert abs(residual[index]) > 1e-3  # ... and the scale change is what the residual holds
        assert parts[index] + residual[index] == pytest.approx(changes[index], abs=1e-5)
    frozen_frame = attribute_steering(tiny, vec, IDS, MULT, logit_diff(POS, NEG), per_prompt=True, freeze_norm=True)
    assert frozen_frame[frozen_frame.component == "residual"].contribution.abs().max() < 1e-5
    assert frozen_frame.attrs["freeze_norm"] is True


def test_target_logprob_adds_up_with_its_curvature_in_the_residual(tiny, vec):
    frame = attribute_steering(tiny, vec, IDS, MULT, [POS, NEG, 50], per_prompt=True)
    assert frame.attrs["metric"] == "logprob"
    for index, ids in enumerate(IDS):
        with torch.no_grad():
            before = torch.logsumexp(torch.log_softmax(tiny(torch.tensor([ids]))[0, -1], -1)[[POS, NEG, 50]], 0)
        after_logits = steered_logits_by_hand(tiny, vec, LAYER, MULT, ids)[-1]
        after = torch.logsumexp(torch.log_softmax(after_logits, -1)[[POS, NEG, 50]], 0)
        assert frame[frame.prompt_index == index].contribution.sum() == pytest.approx(float(after - before), abs=1e-5)


def test_steer_from_and_other_layer_types(tiny):
    # resid_mid of layer 2: attention 2 runs before the vector, so the split starts at MLP 2.
    vec = SteeringVector({2: torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(5))}, "resid_mid")
    frame = attribute_steering(tiny, vec, IDS, 2.0, logit_diff(POS, NEG), per_prompt=True, steer_from=2)
    assert frame[frame.component == "mlp"].layer.min() == 2 and frame[frame.component == "head"].layer.min() == 3

    def hook(act, hook):
        act = act.clone()
        act[:, 2:] += 2.0 * vec.layer_activations[2]
        return act

    for index, ids in enumerate(IDS):
        with torch.no_grad():
            steered = tiny.run_with_hooks(torch.tensor([ids]), fwd_hooks=[("blocks.2.hook_resid_mid", hook)])[0, -1]
        change = by_hand_diff(steered) - by_hand_diff(tiny(torch.tensor([ids]))[0, -1])
        assert frame[frame.prompt_index == index].contribution.sum() == pytest.approx(change, abs=1e-5)


def test_patching_the_top_parts_moves_the_metric_as_their_contributions_say():
    """The toy model's sentiment vector: the largest parts, patched at the read token, move the metric
    the way (sign) and in the order (rank) their contributions say."""
    from steerlens.toy import concept_words, neutral_prompts, sentiment_pairs

    toy = steerlens.load_model("toy")
    vec = train_steering_vector(toy, None, sentiment_pairs("train"), layers=[1], batch_size=32)
    words = concept_words("sentiment")
    metric = logit_diff(words["positive"], words["negative"])
    prompts = neutral_prompts("sentiment", "test")[:12]
    frame = attribute_steering(toy, vec, prompts, 2.0, metric, patch_top=5)
    top = frame.sort_values("rank").head(5)
    assert top.patch_into_unsteered.notna().all() and frame.patch_into_unsteered.notna().sum() == 5
    assert (top.contribution * top.patch_into_unsteered > 0).all()
    assert (top.contribution * top.patch_into_steered > 0).all()
    # The order by size: the patching figures rank the parts as the contributions do.
    assert list(top.patch_into_unsteered.abs().rank(ascending=False)) == [1.0, 2.0, 3.0, 4.0, 5.0]
    # Into the steered run the later MLPs weigh a little more (their input is steered there), yet the
    # three largest parts are the same three.
    assert set(top.patch_into_steered.abs().nlargest(3).index) == set(top.contribution.abs().nlargest(3).index)
    assert frame.attrs["change"] > 0 and frame.attrs["kl"] > 0


def test_patching_figures_equal_a_hand_patch(tiny, vec):
    frame = attribute_steering(tiny, vec, IDS[:1], MULT, logit_diff(POS, NEG), patch_top=30)
    ids = torch.tensor([IDS[0]])
    steer = (f"blocks.{LAYER}.hook_resid_post", lambda act, hook: act + MULT * vec.layer_activations[LAYER])
    with torch.no_grad():
        with tiny.hooks(fwd_hooks=[steer]):
            steered_logits, steered = tiny.run_with_cache(ids)
        clean_logits, clean = tiny.run_with_cache(ids)

    def put(name, value, head=None):
        def hook(act, hook):
            act = act.clone()
            if head is None:
                act[0, -1] = value
            else:
                act[0, -1, head] = value
            return act

        return (name, hook)

    with torch.no_grad():
        mlp = tiny.run_with_hooks(
            ids, fwd_hooks=[put("blocks.3.hook_mlp_out", steered["blocks.3.hook_mlp_out"][0, -1])]
        )
        head = tiny.run_with_hooks(
            ids,
            fwd_hooks=[steer, put("blocks.2.attn.hook_z", clean["blocks.2.attn.hook_z"][0, -1, 1], head=1)],
        )
    row = frame.set_index("name")
    base, top = by_hand_diff(clean_logits[0, -1]), by_hand_diff(steered_logits[0, -1])
    assert row.loc["mlp3", "patch_into_unsteered"] == pytest.approx(by_hand_diff(mlp[0, -1]) - base, abs=1e-5)
    assert row.loc["L2H1", "patch_into_steered"] == pytest.approx(top - by_hand_diff(head[0, -1]), abs=1e-5)


@pytest.fixture(scope="module")
def llama_pair():
    tok = metaspace_tokenizer()
    hf = llama_model(tok, n_layers=4)
    return hf, steerlens.load_model(hf, tokenizer=tok), tok


def test_hf_route_gives_the_hooked_transformers_split(llama_pair):
    """A tiny Llama (grouped-query attention) natively and converted: same parts, per head, same patching."""
    hf, tl, tok = llama_pair
    vec = SteeringVector({1: torch.randn(32, generator=torch.Generator().manual_seed(2))})
    prompts = [llama_prompt(tok, user) for user in ("Do you like cats", "I think the film was good", "Pick one")]
    metric = logit_diff([" good", " love"], [" bad", " hate"])
    native = attribute_steering(hf, vec, prompts, 1.5, metric, tokenizer=tok, patch_top=4, per_prompt=True)
    hooked = attribute_steering(tl, vec, prompts, 1.5, metric, patch_top=4, per_prompt=True)
    assert native.attrs["route"] == "hf" and hooked.attrs["route"] == "hooked"
    assert list(native.name) == list(hooked.name) and (native.component == "head").sum() == 2 * 4 * 3
    for column in ("contribution", "patch_into_unsteered", "patch_into_steered"):
        assert torch.allclose(
            torch.tensor(native[column].to_numpy(dtype=float)),
            torch.tensor(hooked[column].to_numpy(dtype=float)),
            atol=1e-4,
            equal_nan=True,
        ), column
    assert native.attrs["change"] == pytest.approx(hooked.attrs["change"], abs=1e-4)
    # The native split adds up to the native model's own change, measured by hand.
    ids = tok(prompts[0], add_special_tokens=False, return_tensors="pt").input_ids
    handle = hf.model.layers[1].register_forward_hook(lambda m, a, out: out + 1.5 * vec.layer_activations[1])
    with torch.no_grad():
        steered = hf(ids).logits[0, -1]
    handle.remove()
    with torch.no_grad():
        clean = hf(ids).logits[0, -1]
    good, bad = ([tok.convert_tokens_to_ids("▁" + w) for w in ws] for ws in (("good", "love"), ("bad", "hate")))
    score = lambda logits: float(  # noqa: E731
        torch.logsumexp(logits.log_softmax(-1)[good], 0) - torch.logsumexp(logits.log_softmax(-1)[bad], 0)
    )
    assert native[native.prompt_index == 0].contribution.sum() == pytest.approx(score(steered) - score(clean), abs=1e-5)


def test_hf_route_freezes_the_probed_final_norm_scale(llama_pair):
    """The native route has no hook on the final RMSNorm's scale: its probed form freezes it as TL's hook does."""
    hf, tl, tok = llama_pair
    vec = SteeringVector({1: torch.randn(32, generator=torch.Generator().manual_seed(7))})
    prompts = [llama_prompt(tok, user) for user in ("Do you like cats", "Not at all")]
    metric = logit_diff(" good", " bad")
    native = attribute_steering(hf, vec, prompts, 2.0, metric, tokenizer=tok, freeze_norm=True, per_prompt=True)
    hooked = attribute_steering(tl, vec, prompts, 2.0, metric, freeze_norm=True, per_prompt=True)
    for frame in (native, hooked):
        assert frame[frame.component == "residual"].contribution.abs().max() < 1e-5
    assert native.attrs["change"] == pytest.approx(hooked.attrs["change"], abs=1e-4)
    plain = attribute_steering(hf, vec, prompts, 2.0, metric, tokenizer=tok)
    assert abs(plain.attrs["change"] - native.attrs["change"]) > 1e-3  # freezing the scale did change something


def test_hf_route_without_exposed_heads_says_so_and_still_adds_up():
    """GPT-2's attention projects with a Conv1D: no per-head outputs, attention per layer, with a warning."""
    hf = make_hf_model("gpt2")
    tok = word_tokenizer()
    tl = steerlens.load_model(hf, tokenizer=tok)
    vec = SteeringVector({0: torch.randn(32, generator=torch.Generator().manual_seed(4))})
    prompts = ["the cat sat on the mat", "a big dog ran fast"]
    metric = logit_diff(tok.convert_tokens_to_ids("happy"), tok.convert_tokens_to_ids("sad"))
    with pytest.warns(AttributionWarning, match="per layer, not per head"):
        native = attribute_steering(hf, vec, prompts, 2.0, metric, tokenizer=tok)
    assert set(native.component) == {"direct", "attn", "mlp", "residual"}
    assert "GPT2Attention" in native.attrs["notes"][0]
    hooked = attribute_steering(tl, vec, prompts, 2.0, metric, heads=False)
    assert list(native.name) == list(hooked.name)
    assert torch.allclose(
        torch.tensor(native.contribution.to_numpy(dtype=float)),
        torch.tensor(hooked.contribution.to_numpy(dtype=float)),
        atol=1e-4,
    )
    assert native.contribution.sum() == pytest.approx(native.attrs["change"], abs=1e-6)


def test_bad_input_is_one_clear_error(tiny, vec):
    two = random_vector(tiny, [1, 2])
    with pytest.raises(LayerError, match="one steered cell"):
        attribute_steering(tiny, two, IDS, 1.0, logit_diff(POS, NEG))
    with pytest.raises(LayerError, match="attribution explains one"):
        attribute_steering(tiny, two, IDS, 1.0, logit_diff(POS, NEG), layers=[1, 2])
    joint = attribute_steering(tiny, two, IDS, 1.0, logit_diff(POS, NEG), layers=[[1, 2]])
    assert sorted(joint[joint.component == "direct"].layer) == [1, 2]
    with pytest.raises(InvalidArgumentError, match="token metric"):
        attribute_steering(tiny, vec, IDS, 1.0, lambda s, u: s.sum(-1))
    with pytest.raises(InvalidArgumentError, match="patch_top"):
        attribute_steering(tiny, vec, IDS, 1.0, logit_diff(POS, NEG), patch_top=-1)
    module = SteeringVector({1: torch.ones(tiny.cfg.d_model)}, "module:mlp")
    with pytest.raises(LayerError, match="residual stream"):
        attribute_steering(tiny, module, IDS, 1.0, logit_diff(POS, NEG))


def test_plots_show_the_top_parts_and_the_head_grid(tiny, vec):
    frame = attribute_steering(tiny, vec, IDS, MULT, logit_diff(POS, NEG), patch_top=3)
    ax = plot_attribution(frame, top=5).axes[0]
    assert len(ax.patches) == 6  # five parts and the residual
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "residual" and labels[:-1] == list(frame.sort_values("rank").name.head(5))
    assert len(ax.collections) == 2  # the two patching markers
    grid = plot_attribution(frame, kind="heads").axes[0].images[0].get_array()
    assert grid.shape == (2, 4 + 1)  # layers 2 and 3 × 4 heads and the MLP
    value = frame.set_index("name").loc["L2H3", "contribution"]
    assert grid[0, 3] == pytest.approx(value)
    per_prompt = attribute_steering(tiny, vec, IDS, MULT, logit_diff(POS, NEG), per_prompt=True)
    assert plot_attribution(per_prompt, top=3).axes[0].get_yticklabels()[-1].get_text() == "residual"
