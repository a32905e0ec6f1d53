"""Layer × multiplier sweeps of a steering vector, with the unsteered prefix computed once.

Steering ``resid_post`` of layer L (or ``resid_pre``) leaves every activation
before it untouched. So each batch of prompts runs through the clean model once,
caching the residual stream at every swept layer; each layer then resumes from
its cached residual with the steering applied (``start_at_layer``), every
multiplier stacked along the batch in one forward pass, and only the last real
token of each prompt is unembedded. Prompts are batched by token length, so
little compute goes to padding. The result equals ``vec.apply(model,
multiplier=m)`` followed by a full forward pass (every position steered). Other
layer types (``resid_mid``, ``attn_out``, ``mlp_out``) and shortformer models
take that plain, slower route.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.errors import InvalidArgumentError
from steerlens.layers import hook_name, resolve_layers
from steerlens.metrics import MetricFn, resolve_metric
from steerlens.models import ResolvedModel, resolve_model
from steerlens.operators import Operator
from steerlens.samples import SampleLike
from steerlens.steering import SteeringHook, check_compatible, make_spec
from steerlens.tail import final_resid_at_last_token, last_token_resid, unembed
from steerlens.tokenization import PaddingSide, encode_prompt, pad_batch, pad_token_id
from steerlens.training import train_steering_vector
from steerlens.vector import SteeringVector

DEFAULT_MULTIPLIERS: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)
# Block at which the forward pass resumes, relative to the steered layer.
_RESUME_OFFSET = {"resid_pre": 0, "resid_post": 1}
# Rows per unembedding call: one call reads all of W_U, so cells are gathered (bounded memory).
_UNEMBED_ROWS = 256


@dataclass(frozen=True)
class PromptBatch:
    """Padded prompts (positions ``indices`` in the caller's list) and each one's last real token column."""

    indices: list[int]
    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    last: Int[Tensor, "batch"]


@dataclass(frozen=True)
class LogitsCell:
    """Next-token logits of prompts ``indices`` with one layer steered at one multiplier."""

    layer: int
    multiplier: float
    indices: list[int]
    steered: Float[Tensor, "batch d_vocab"]
    unsteered: Float[Tensor, "batch d_vocab"]


def check_prompts(prompts: str | Iterable[str]) -> list[str]:
    """A list of non-empty prompt strings (one string counts as one prompt)."""
    listed = [prompts] if isinstance(prompts, str) else list(prompts)
    if not listed:
        raise InvalidArgumentError("no prompts given; pass at least one prompt string.")
    for p in listed:
        if not isinstance(p, str) or not p:
            raise InvalidArgumentError(f"prompts must be non-empty strings, got {p!r}.")
    return listed


def check_multipliers(multipliers: float | Iterable[float]) -> list[float]:
    """Finite, distinct multipliers as floats."""
    listed = [multipliers] if isinstance(multipliers, (int, float)) else list(multipliers)
    if not listed:
        raise InvalidArgumentError("multipliers is empty; pass at least one number.")
    for m in listed:
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m):
            raise InvalidArgumentError(f"multipliers must be finite numbers, got {m!r}.")
    if len(set(listed)) != len(listed):
        raise InvalidArgumentError(f"multipliers must be distinct, got {listed}.")
    return [float(m) for m in listed]


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}.")
    return batch_size


def prompt_batches(
    resolved: ResolvedModel, prompts: Sequence[str], batch_size: int, padding_side: PaddingSide | None
) -> Iterator[PromptBatch]:
    """Tokenize (model's BOS convention) and pad prompts, ``batch_size`` at a time, with an attention mask.

    Prompts are grouped by token length (longest first), so little compute goes to padding.
    """
    check_batch_size(batch_size)
    model = resolved.model
    side = padding_side or getattr(resolved.tokenizer or model.tokenizer, "padding_side", None) or "right"
    if side not in ("left", "right"):
        raise InvalidArgumentError(f"padding_side must be 'left' or 'right', got {side!r}.")
    encoded = [encode_prompt(model, resolved.tokenizer, p, exact=resolved.exact_tokenizer) for p in prompts]
    pad_id = pad_token_id(model, resolved.tokenizer)
    device = model.cfg.device
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = pad_batch([encoded[i] for i in indices], pad_id, side)
        last = torch.tensor([batch.position(i, n - 1) for i, n in enumerate(batch.lengths)])
        yield PromptBatch(indices, batch.tokens.to(device), batch.attention_mask.to(device), last.to(device))


def can_resume(model: Any, layer_type: str) -> bool:
    """Whether steering at ``layer_type`` can resume from a cached residual (the fast path)."""
    cfg = model.cfg
    return (
        layer_type in _RESUME_OFFSET
        and cfg.positional_embedding_type != "shortformer"
        and getattr(cfg, "n_devices", 1) == 1
    )


def iter_steered_logits(
    model: Any,
    vector: SteeringVector,
    prompts: str | Iterable[str],
    layers: int | Iterable[int] | None = None,
    multipliers: float | Iterable[float] = (1.0,),
    *,
    tokenizer: Any = None,
    batch_size: int = 32,
    padding_side: PaddingSide | None = None,
    operator: Operator | None = None,
    show_progress: bool = False,
) -> Iterator[LogitsCell]:
    """Last-token logits, steered and unsteered, for each batch × layer × multiplier.

    Each layer of ``vector`` (or of ``layers``) is applied alone, at every position,
    with ``operator`` (default: addition). Cells come batch by batch (prompts grouped
    by length; ``cell.indices`` are positions in ``prompts``), then layer by layer,
    then in the order of ``multipliers``. ``batch_size`` is the number of sequences
    per forward pass (on the fast path a batch holds ``batch_size // len(multipliers)``
    prompts, each repeated once per multiplier).

    Example:
        >>> for cell in iter_steered_logits(model, vec, ["I think"], multipliers=[-2, 2]):
        ...     print(cell.layer, cell.multiplier, cell.steered.shape)
    """
    resolved = resolve_model(model, tokenizer)
    tl_model = resolved.model
    prompt_list = check_prompts(prompts)
    mults = check_multipliers(multipliers)
    n_layers = tl_model.cfg.n_layers
    layer_list = vector.layers if layers is None else resolve_layers(layers, n_layers)
    layer_type = vector.layer_type
    single = {layer: vector.select_layers([layer]) for layer in layer_list}
    check_compatible({layer: vector.layer_activations[layer] for layer in layer_list}, layer_type, tl_model)
    hooks = {layer: _hooks(vec, layer, mults, operator) for layer, vec in single.items()}
    fast = can_resume(tl_model, layer_type)
    names = [hook_name(layer, layer_type) for layer in layer_list] if fast else []
    # batch_size counts sequences per forward pass; the fast path stacks the multipliers.
    per_batch = max(1, check_batch_size(batch_size) // len(mults)) if fast else batch_size
    batches = prompt_batches(resolved, prompt_list, per_batch, padding_side)
    total = math.ceil(len(prompt_list) / per_batch)
    for batch in tqdm(batches, total=total, desc="Sweeping", disable=not show_progress):
        clean, cache = _clean_pass(tl_model, batch, names)
        pending: list[tuple[int, list[Tensor | None]]] = []
        for layer in layer_list:
            steered: list[Tensor | None]
            with torch.no_grad():
                if fast:
                    act = cache[hook_name(layer, layer_type)]
                    steered = _resumed(tl_model, act, hooks[layer], layer + _RESUME_OFFSET[layer_type], batch)
                else:
                    steered = [_full_forward(tl_model, single[layer], m, operator, batch) for m in mults]
            pending.append((layer, steered))
            if sum(len(r) for _, r in pending) * len(batch.indices) >= _UNEMBED_ROWS or layer == layer_list[-1]:
                yield from _cells_of(tl_model, batch, clean, pending, mults)
                pending = []


def _cells_of(
    model: Any, batch: PromptBatch, clean: Tensor, pending: list[tuple[int, list[Tensor | None]]], mults: list[float]
) -> Iterator[LogitsCell]:
    """Unembed the clean and steered last-token residuals of some layers in one call, as cells."""
    residuals = [clean] + [r for _, steered in pending for r in steered if r is not None]
    with torch.no_grad():
        logits = unembed(model, torch.cat(residuals)).split(clean.shape[0])
    # Yield outside no_grad: the caller's code must not run with gradients silently off.
    unsteered, computed = logits[0], iter(logits[1:])
    for layer, steered in pending:
        for m, r in zip(mults, steered):
            yield LogitsCell(layer, m, batch.indices, unsteered if r is None else next(computed), unsteered)


@torch.no_grad()
def _clean_pass(model: Any, batch: PromptBatch, names: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """Unsteered last-token residual (after the last block), and the activations at ``names``."""
    final, cache = model.run_with_cache(
        batch.tokens, attention_mask=batch.attention_mask, names_filter=names,
        stop_at_layer=model.cfg.n_layers, return_cache_object=False,
    )
    return last_token_resid(final, batch.last), cache


def _hooks(vector: SteeringVector, layer: int, mults: list[float], operator: Operator | None) -> list[SteeringHook]:
    """One steering hook per multiplier: the exact function ``vector.apply`` would install."""
    vectors = vector.layer_activations
    return [SteeringHook(vectors[layer], make_spec(vectors, vector.layer_type, m, operator, 0, None)) for m in mults]


def _resumed(
    model: Any,
    act: Float[Tensor, "batch pos d_model"],
    hooks: list[SteeringHook],
    resume_at: int,
    batch: PromptBatch,
) -> list[Tensor | None]:
    """Steered last-token residuals per multiplier, resuming at block ``resume_at``; all multipliers in one pass.

    ``None`` stands for a multiplier that leaves the activation exactly unchanged (m = 0
    with addition): its result is the clean one.
    """
    steered_acts = [hook.steer(act, 0) for hook in hooks]
    moved = [i for i, s in enumerate(steered_acts) if not torch.equal(s, act)]
    out: list[Tensor | None] = [None] * len(hooks)
    if moved:
        n = len(moved)
        resid = final_resid_at_last_token(
            model, torch.cat([steered_acts[i] for i in moved]), resume_at,
            batch.last.repeat(n), batch.attention_mask.repeat(n, 1),
        )
        for i, chunk in zip(moved, resid.split(act.shape[0])):
            out[i] = chunk
    return out


def _full_forward(
    model: Any, vector: SteeringVector, multiplier: float, operator: Operator | None, batch: PromptBatch
) -> Tensor:
    """The plain route: steer with ``vector.apply`` and run the whole model."""
    with vector.apply(model, multiplier=multiplier, operator=operator):
        final = model(batch.tokens, attention_mask=batch.attention_mask, stop_at_layer=model.cfg.n_layers)
    return last_token_resid(final, batch.last)


def sweep_layers(
    model: Any,
    training_samples_or_vector: SteeringVector | Iterable[SampleLike],
    eval_prompts: str | Iterable[str],
    layers: int | Iterable[int] | None = None,
    multipliers: Iterable[float] = DEFAULT_MULTIPLIERS,
    metric: str | MetricFn = "kl",
    batch_size: int = 32,
    *,
    layer_type: str = "resid_post",
    tokenizer: Any = None,
    padding_side: PaddingSide | None = None,
    operator: Operator | None = None,
    per_prompt: bool = False,
    train_kwargs: dict[str, Any] | None = None,
    show_progress: bool = False,
) -> pd.DataFrame:
    """A metric of steered vs unsteered next-token logits for each layer × multiplier.

    ``training_samples_or_vector`` is a :class:`SteeringVector` (its layers are swept,
    or ``layers`` of it) or contrast pairs, from which one vector per layer is trained
    in one pass (``layers=None``: every layer; ``layer_type`` and ``train_kwargs`` go
    to :func:`train_steering_vector`). Each layer is steered alone, at every
    position, on each prompt; the metric (default ``"kl"``, see
    :mod:`steerlens.metrics`) is read at each prompt's last token.

    Returns one row per layer × multiplier with columns ``layer, multiplier,
    <metric>`` (mean over prompts), ``<metric>_std`` and ``n_prompts``; with
    ``per_prompt=True``, one row per layer × multiplier × prompt with columns
    ``layer, multiplier, prompt_index, prompt, <metric>``. The metric's column name
    is in ``df.attrs["metric"]``. ``batch_size`` is the number of sequences per
    forward pass: prompts are run ``batch_size // len(multipliers)`` at a time (at
    least one), every multiplier of a prompt in the same pass.

    Example:
        >>> df = sweep_layers(model, pairs, ["I think the film", "Honestly, the food"], multipliers=[-4, 0, 4])
        >>> df.pivot(index="layer", columns="multiplier", values="kl")
    """
    resolved = resolve_model(model, tokenizer)
    if isinstance(training_samples_or_vector, SteeringVector):
        vector = training_samples_or_vector
    else:
        vector = train_steering_vector(
            model, tokenizer, training_samples_or_vector, layers=layers, layer_type=layer_type, **(train_kwargs or {})
        )
    name, fn = resolve_metric(metric, resolved.tokenizer or resolved.model.tokenizer)
    prompt_list = check_prompts(eval_prompts)
    rows = []
    for cell in iter_steered_logits(
        model, vector, prompt_list, layers, multipliers, tokenizer=tokenizer, batch_size=batch_size,
        padding_side=padding_side, operator=operator, show_progress=show_progress,
    ):
        values = _metric_values(fn, name, cell)
        for index, value in zip(cell.indices, values):
            rows.append({"layer": cell.layer, "multiplier": cell.multiplier, "prompt_index": index,
                         "prompt": prompt_list[index], name: value})
    frame = pd.DataFrame(rows).sort_values(["layer", "multiplier", "prompt_index"], ignore_index=True)
    if not per_prompt:
        grouped = frame.groupby(["layer", "multiplier"], sort=True)[name]
        stats = {name: grouped.mean(), f"{name}_std": grouped.std(), "n_prompts": grouped.size()}
        frame = pd.DataFrame(stats).reset_index()
    frame.attrs["metric"] = name
    return frame


def _metric_values(fn: MetricFn, name: str, cell: LogitsCell) -> list[float]:
    values = fn(cell.steered, cell.unsteered)
    values = torch.as_tensor(values).detach().reshape(-1)
    if values.shape[0] != cell.steered.shape[0]:
        raise InvalidArgumentError(
            f"metric {name!r} returned {values.shape[0]} values for {cell.steered.shape[0]} prompts; "
            "a metric must return one value per prompt."
        )
    return values.float().cpu().tolist()
