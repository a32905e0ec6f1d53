"""Steered and unsteered generations from the same prompt, for side-by-side comparison.

Prompts are strings (chat-template strings too) or token ids, encoded by the one
tokenization policy (:class:`~steerlens.tokens.TokenPolicy`) with ``prepend_bos``.
:func:`generate_grid` generates over prompts × layers × multipliers in one call, with
each text's fluency under the unsteered model beside it (the damage of the effect).

What every helper here returns is the reply alone: the prompt is encoded once (one
BOS; none added in front of a chat string whose template wrote its own), the model's
own ``generate`` runs from those token ids (greedy, or sampled with ``seed``) until the
end of the turn or ``max_new_tokens``, and only the new token ids are decoded, with
``skip_special_tokens=True``. No string is ever sliced by the prompt's length, the
prompt is never in the text, and neither is the EOS (SmolLM2's ``<|im_end|>``) nor
anything after it. The end of the turn is the model's EOS: on a HookedTransformer or
TransformerBridge the tokenizer's ``eos_token_id`` and the token a chat template writes
after an assistant message (Gemma's ``<end_of_turn>``, found by
``steerlens.tokens.turns.end_of_turn_ids``); on a Hugging Face model the generation
config's ``eos_token_id`` (one id or several), where a template's other end-of-turn
token stops the reply only if that config lists it.
Decoded alone, a reply whose first token carries a SentencePiece word mark
(``▁Sure``) reads without the leading space, as Hugging Face's pipelines do.

Why not ``model.generate(prompt)[len(prompt):]``: that is TransformerLens' behaviour,
not the tokenizer's or steerlens'. ``HookedTransformer.generate`` (and the
``TransformerBridge``'s) given a string returns prompt and reply decoded together with
``skip_special_tokens=True``, so a chat prompt comes back without its
``<|im_start|>``/``<|im_end|>`` markers, shorter than the prompt string, and slicing by
the prompt's length cuts into the reply. To get the reply yourself, generate from
tokens and slice tokens (``prepend_bos=False``: the template wrote the BOS)::

    tokens = model.to_tokens(chat, prepend_bos=False)
    out = model.generate(tokens, max_new_tokens=40, do_sample=False, verbose=False)
    reply = model.tokenizer.decode(out[0, tokens.shape[1] :], skip_special_tokens=True)

Scoring fixed choices under steering (saklas' ``score_choices``) needs no function of
its own: :func:`~steerlens.evaluation.continuation_logprob` scores each choice as a
whole continuation, steered and unsteered, with one prompt repeated per choice::

    choices = [" yes", " no", " maybe"]
    df = continuation_logprob(model, vec, [prompt] * len(choices), choices, multipliers=[0, 2], layers=[12])
    table = df.pivot_table(index="completion", columns="multiplier", values="logprob_steered")
    np.exp(table) / np.exp(table).sum()  # each choice's share, per multiplier (divide by n_tokens for per-token)
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd
import torch
from typing_extensions import Unpack

from steerlens.backends import backend_for
from steerlens.checks import check_multipliers
from steerlens.errors import InvalidArgumentError, TargetTokenError
from steerlens.evaluation.metrics import MetricFn
from steerlens.evaluation.sweep import group_labels, layer_sweep, steered_cells
from steerlens.hooks import make_spec
from steerlens.settings import Run, Settings, SettingsKeywords, open_run
from steerlens.tokens import PreparedPrompts, PromptInput, Prompts, check_prepend_bos, ids_in_context, text_ids
from steerlens.vector import Layers, SteeringVector, vector_groups

_USES: frozenset[str] = frozenset({"tokenizer", "batch_size", "prepend_bos", "operator"})
"""The settings :func:`generate_grid` reads (generation steers every position and pads nothing)."""


def generate_text(
    model: Any,
    prompt: PromptInput,
    max_new_tokens: int = 20,
    seed: int | None = None,
    tokenizer: Any = None,
    *,
    prepend_bos: bool | None = None,
) -> str:
    """The model's reply to ``prompt``: greedy (``seed=None``) or sampled with ``seed`` set first.

    ``prompt`` is a string (a chat-template string too) or token ids. Returns the new
    token ids only, decoded with ``skip_special_tokens=True``: never the prompt, and
    nothing from the end-of-turn token (the model's EOS, included) on; at most
    ``max_new_tokens`` tokens. Unlike TransformerLens' ``model.generate(text)``, whose
    string drops the prompt's special tokens (see the module docstring), the result
    needs no slicing.

    Example:
        >>> chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        >>> generate_text(model, chat, max_new_tokens=40)  # the assistant's reply, no <|im_end|>
    """
    backend = backend_for(model, tokenizer)
    backend.check_tokenizer()
    return backend.generate(prompt, max_new_tokens, seed, check_prepend_bos(prepend_bos))


def steered_and_unsteered(
    model: Any,
    vector: SteeringVector,
    prompt: PromptInput,
    multiplier: float = 4.0,
    max_new_tokens: int = 20,
    seed: int | None = None,
    tokenizer: Any = None,
    *,
    prepend_bos: bool | None = None,
) -> tuple[str, str]:
    """``(steered, unsteered)`` replies to ``prompt``, same decoding settings and tokens.

    Each is :func:`generate_text`'s reply (the new tokens decoded with
    ``skip_special_tokens=True``, up to the end-of-turn token, prompt never included),
    the first inside ``vector.apply(model, multiplier=multiplier)``.

    Example:
        >>> steered, plain = steered_and_unsteered(model, vec, "The film was", multiplier=6)
    """
    backend = backend_for(model, tokenizer)
    with vector.apply(backend, multiplier=multiplier):
        steered = generate_text(backend, prompt, max_new_tokens, seed, prepend_bos=prepend_bos)
    return steered, generate_text(backend, prompt, max_new_tokens, seed, prepend_bos=prepend_bos)


def generate_grid(
    model: Any,
    vector: SteeringVector,
    prompts: Prompts,
    layers: Layers = None,
    multipliers: float | Iterable[float] = (1.0,),
    *,
    max_new_tokens: int = 20,
    metric: str | MetricFn | None = None,
    seed: int | None = None,
    fluency: bool = True,
    **settings: Unpack[SettingsKeywords],
) -> pd.DataFrame:
    """Steered generations for every prompt × layer (or group) × multiplier, with their fluency, in one call.

    Each cell steers one layer of ``vector`` (or a group: ``layers`` as in
    :func:`~steerlens.evaluation.sweep.sweep_layers`, ``"joint"`` or ``[[2, 3], 4]``)
    at one multiplier with ``operator`` (default: addition) at every position, and
    generates ``max_new_tokens`` greedily (``seed=None``) or sampled with ``seed``
    re-set before each generation: exactly ``with vec.apply(model, multiplier=m):``
    followed by :func:`generate_text`. The unsteered text of each prompt is generated
    once and sits beside every cell (multiplier 0 with addition is that text too).

    Fluency, the damage beside the effect: ``nll`` is the unsteered model's mean
    negative log-likelihood per token (nats) of the generated text after its prompt,
    ``unsteered_nll`` the same for the unsteered text. A steered text that is fluent
    reads about as likely as the unsteered one; collapsed text (repeats, garbage)
    reads far less likely. Each text is scored as its tokens after the prompt (the
    ids it encodes to right after the prompt, see
    :func:`~steerlens.tokens.ids_in_context`; its own ids when it merges with the
    prompt's last token), every prefix as a row of batched passes of ``batch_size``
    sequences (prefixes shared between texts run once). An empty text has NaN ``nll``.
    That costs about ``max_new_tokens / 2`` times a forward pass over each text (the
    backends give next-token logits only): on SmolLM2-135M with 20 new tokens, 1.6×
    the time of the generations themselves (one chat prompt, 2 layers × 3 multipliers,
    a busy machine); ``fluency=False`` leaves those three columns out.

    ``metric`` (e.g. ``"kl"``, ``prob_mass(" great")``) adds the sweep's next-token
    columns at the prompt for the same cells (the metric, ``kl`` and a token metric's
    ``target_mass`` columns, see :func:`~steerlens.evaluation.sweep.sweep_layers`).

    Each ``text`` and ``unsteered_text`` is the reply alone, as :func:`generate_text`
    returns it: the new tokens decoded with ``skip_special_tokens=True``, ending before
    the end-of-turn token, prompt never included (chat prompts need no slicing).

    ``settings``: :class:`~steerlens.settings.Settings` fields by name (``tokenizer``,
    ``batch_size`` (default 32), ``prepend_bos``, ``operator``) or ``settings=``, see
    :mod:`steerlens.settings`. Prompts are encoded with ``prepend_bos`` (None: the model's
    default); a shared value's other fields (``padding_side``, ``steer_from``,
    ``show_progress``, ``distributed``) are not used.

    Returns one row per prompt × layer × multiplier (in that order, layers and
    multipliers as given) with columns ``prompt_index, prompt, layer, multiplier,
    text, n_tokens, nll, unsteered_text, unsteered_nll`` and the metric's; the
    metric's column name is in ``df.attrs["metric"]`` (None without one).

    Example:
        >>> df = generate_grid(model, vec, ["I think the film"], layers=[4, 6], multipliers=[-2, 2], metric="kl")
        >>> df[["layer", "multiplier", "text", "nll", "unsteered_nll", "kl"]]
    """
    run = open_run(model, settings, "generate_grid", _USES, batch_size=32)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidArgumentError(
            f"max_new_tokens must be a whole number of at least 1, got {max_new_tokens!r}; pass e.g. max_new_tokens=20."
        )
    backend, operator, prepend_bos = run.backend, run.settings.operator, run.settings.prepend_bos
    # Only the fields this verb takes reach the steps below (a shared settings= value may carry others).
    run = Run(backend, Settings(batch_size=run.batch_size, prepend_bos=prepend_bos, operator=operator))
    prepared = run.prepare(prompts)
    prompt_list = prepared.prompts
    mults = check_multipliers(multipliers)
    groups, vectors = vector_groups(vector, layers, backend.n_layers)
    backend.check_vector(vectors, vector.layer_type)
    labels = group_labels(groups)

    rows = []
    for index, prompt in enumerate(prompt_list):
        plain = backend.generate(prompt, max_new_tokens, seed, prepend_bos)
        for label, group in zip(labels, groups):
            for m in mults:
                if operator is None and m == 0:
                    text = plain  # adding 0 × the vector changes nothing
                else:
                    spec = make_spec(
                        {layer: vectors[layer] for layer in group}, vector.layer_type, m, operator, 0, None
                    )
                    with backend.apply(spec):
                        text = backend.generate(prompt, max_new_tokens, seed, prepend_bos)
                rows.append(
                    {
                        "prompt_index": index,
                        "prompt": prompt,
                        "layer": label,
                        "multiplier": m,
                        "text": text,
                        "unsteered_text": plain,
                    }
                )

    columns = ["prompt_index", "prompt", "layer", "multiplier", "text", "unsteered_text"]
    if fluency:
        pairs = {(row["prompt_index"], t) for row in rows for t in (row["text"], row["unsteered_text"])}
        scores = _fluency(run, vector, groups[0][0], prepared, sorted(pairs))
        for row in rows:
            row["n_tokens"], row["nll"] = scores[(row["prompt_index"], row["text"])]
            row["unsteered_nll"] = scores[(row["prompt_index"], row["unsteered_text"])][1]
        columns = [*columns[:5], "n_tokens", "nll", "unsteered_text", "unsteered_nll"]
    frame = pd.DataFrame(rows, columns=columns)
    name = None
    if metric is not None:
        swept = layer_sweep(run, vector, prompt_list, layers, mults, metric, per_prompt=True)
        name = swept.attrs["metric"]
        frame = frame.merge(swept.drop(columns="prompt"), on=["layer", "multiplier", "prompt_index"], how="left")
    frame.attrs["metric"] = name
    return frame


def _fluency(
    run: Run, vector: SteeringVector, layer: int, prepared: PreparedPrompts, texts: list[tuple[int, str]]
) -> dict[tuple[int, str], tuple[int, float]]:
    """``(prompt index, text) -> (n_tokens, mean NLL per token)`` under the unsteered model.

    Every prefix ``prompt + text[:t]`` is one row of a sweep at multiplier 0 (whose
    ``unsteered`` logits are the clean model's next-token logits), so the model kinds,
    padding and batching are the sweep's; only the run's batch size is used (the prefixes
    are ids encoded already, the clean pass has no operator, and it shows no bar).
    """
    tok = run.backend.tokenizer
    targets: dict[tuple[int, str], list[int]] = {}
    for index, text in texts:
        if not text:
            targets[(index, text)] = []
            continue
        try:
            targets[(index, text)] = ids_in_context(tok, prepared.prompts[index], text)
        except TargetTokenError:
            targets[(index, text)] = text_ids(tok, text)
    prefixes: dict[tuple[int, ...], int] = {}
    wanted: dict[int, list[tuple[tuple[int, str], int]]] = {}
    for key, target in targets.items():
        for t, token in enumerate(target):
            row = prefixes.setdefault(tuple(prepared.encoded[key[0]] + target[:t]), len(prefixes))
            wanted.setdefault(row, []).append((key, token))
    sums = {key: 0.0 for key in targets}
    if prefixes:
        clean = Run(run.backend, Settings(batch_size=run.batch_size, show_progress=False))
        for cell in steered_cells(clean, vector, [list(p) for p in prefixes], [layer], [0.0]):
            logprobs = torch.log_softmax(cell.unsteered.float(), -1)
            for r, row in enumerate(cell.indices):
                for key, token in wanted[row]:
                    sums[key] -= float(logprobs[r, token])
    return {key: (len(target), sums[key] / len(target) if target else math.nan) for key, target in targets.items()}
