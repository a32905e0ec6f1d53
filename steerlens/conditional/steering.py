"""Conditional steering (the CAST idea): steer a sequence only when its prompt calls for it.

A :class:`Condition` scores a prompt by projecting its activations at one site
(``layer``, ``layer_type``) on a condition direction, e.g. a topic vector, and
compares the score with a threshold. :func:`conditional_steering` decides, per
sequence, on the prompt's own forward pass, and steers the rows that pass
with the steering vector, at every position of that pass that comes after the
condition's site and at every generated token after it; the other rows are left
exactly as they are (bit for bit: their delta is ``-0.0``).

It is built from the public pieces: the steering vector is applied through the
model's backend with a stateful operator that multiplies its delta by a per-row
0/1 gate, and the condition is read during the same pass by a second, capture-only
operator at the condition's site. A forward pre-hook notices where each pass
starts, so a new prompt (position 0) gets a new decision while the KV-cache steps
of ``generate`` keep it. Use it with ``model.generate`` on a HookedTransformer or a
Hugging Face model; without a KV cache every pass starts at position 0 and the
decision is re-made on the whole sequence so far.

Fit the threshold from labelled prompts with
:func:`steerlens.conditional.fit.fit_condition`.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from typing_extensions import Unpack

from steerlens.backends import Backend, backend_for, stored_layer_type
from steerlens.checks import finite_number
from steerlens.errors import InvalidArgumentError, LayerError, ModelMismatchError
from steerlens.hooks.operators import Operator, addition_operator
from steerlens.hooks.positions import PassPositions, TokenIndices
from steerlens.hooks.steering_hook import make_spec
from steerlens.layers import check_layer_name, resolve_layers
from steerlens.settings import PROMPT_READING, Run, SettingsKeywords, open_run
from steerlens.tokens import Prompts

if TYPE_CHECKING:
    from steerlens.vector import SteeringVector

Aggregate = Literal["mean", "last"]


@dataclass(frozen=True)
class Condition:
    """When to steer: a prompt's score on ``direction`` at ``(layer, layer_type)`` passes ``threshold``.

    The score of a prompt is the projection of its activations on the unit
    ``direction``, averaged over its tokens (``aggregate="mean"``; a leading token
    of the prompt is left out when ``skip_first``, as a BOS carries nothing of the
    prompt) or taken at its last token (``"last"``). The condition holds when the
    score is above the threshold, or below it with ``above=False``.

    Example:
        >>> food = Condition.from_vector(topic_vec, layer=2, threshold=0.0)
        >>> food.holds(torch.tensor([1.5, -0.3]))
        tensor([ True, False])
    """

    direction: Float[Tensor, "d_model"]
    layer: int
    layer_type: str = "resid_post"
    threshold: float = 0.0
    aggregate: Aggregate = "mean"
    above: bool = True
    skip_first: bool = True

    def __post_init__(self) -> None:
        if (
            not isinstance(self.direction, Tensor)
            or self.direction.dim() != 1
            or not self.direction.is_floating_point()
        ):
            raise InvalidArgumentError(
                f"a condition's direction must be a 1-D float tensor of size d_model, got "
                f"{getattr(self.direction, 'shape', type(self.direction).__name__)}."
            )
        if not torch.isfinite(self.direction).all() or self.direction.norm() == 0:
            raise InvalidArgumentError("a condition's direction must be finite and non-zero.")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise LayerError(f"a condition's layer must be an int, got {self.layer!r}.")
        object.__setattr__(self, "layer_type", check_layer_name(self.layer_type))  # resolved on the model
        object.__setattr__(self, "threshold", finite_number(self.threshold, "threshold"))
        if self.aggregate not in ("mean", "last"):
            raise InvalidArgumentError(f"aggregate must be 'mean' or 'last', got {self.aggregate!r}.")

    @classmethod
    def from_vector(
        cls,
        vector: "SteeringVector",
        layer: int | None = None,
        threshold: float = 0.0,
        *,
        aggregate: Aggregate = "mean",
        above: bool = True,
        skip_first: bool = True,
    ) -> "Condition":
        """The condition "the prompt projects on ``vector`` at ``layer``" (default: its only layer).

        Example:
            >>> Condition.from_vector(train_steering_vector(model, None, topic_pairs(), layers=[2]))
        """
        layers = list(vector.layer_activations)
        if layer is None:
            if len(layers) != 1:
                raise LayerError(f"the vector has layers {sorted(layers)}; pass layer=... to pick the condition's.")
            layer = layers[0]
        if layer not in vector.layer_activations:
            raise LayerError(f"the vector has no layer {layer}; it has {sorted(layers)}.")
        return cls(
            vector.layer_activations[layer].detach(),
            layer,
            vector.layer_type,
            threshold,
            aggregate=aggregate,
            above=above,
            skip_first=skip_first,
        )

    def with_threshold(self, threshold: float) -> "Condition":
        """The same condition with another threshold."""
        return replace(self, threshold=threshold)

    def score(
        self, activations: Float[Tensor, "batch pos d_model"], mask: Bool[Tensor, "batch pos"] | None = None
    ) -> Float[Tensor, "batch"]:
        """Each row's score from its activations at the condition's site (``mask``: real tokens)."""
        acts = activations.float()
        unit = self.direction.to(acts.device, torch.float32)
        projection = acts @ (unit / unit.norm())
        real = torch.ones_like(projection, dtype=torch.bool) if mask is None else mask.to(acts.device).bool()
        counts = real.sum(-1)
        if self.aggregate == "last":
            last = real.shape[-1] - 1 - real.flip(-1).int().argmax(-1)
            return projection.gather(-1, last[:, None])[:, 0]
        if self.skip_first:
            first = real.int().argmax(-1)  # first real column of each row
            drop = (counts > 1)[:, None] & (torch.arange(real.shape[-1], device=real.device)[None] == first[:, None])
            real = real & ~drop
            counts = real.sum(-1)
        return (projection * real).sum(-1) / counts.clamp_min(1)

    def holds(self, scores: Tensor) -> Bool[Tensor, "batch"]:
        """Whether the condition holds for each score."""
        return scores > self.threshold if self.above else scores < self.threshold


@dataclass
class Decision:
    """The condition's verdict on one prompt pass: every row's score and whether it is steered."""

    scores: Float[Tensor, "batch"]
    steered: Bool[Tensor, "batch"]


@dataclass
class ConditionalState:
    """What a :func:`conditional_steering` block decided; yielded by the ``with`` statement.

    ``decisions`` holds one :class:`Decision` per prompt pass (per ``generate`` call
    with a KV cache); ``steered`` and ``scores`` are the latest one's.
    """

    condition: Condition
    decisions: list[Decision] = field(default_factory=list)
    gate: Tensor | None = None
    mask: Tensor | None = None
    pending: bool = False
    incoming: PassPositions | None = None

    @property
    def steered(self) -> Bool[Tensor, "batch"] | None:
        return self.decisions[-1].steered if self.decisions else None

    @property
    def scores(self) -> Float[Tensor, "batch"] | None:
        return self.decisions[-1].scores if self.decisions else None

    def begin_pass(self, positions: PassPositions) -> None:
        """A forward pass is about to run at ``positions`` (classified at its first site, where its shape is known)."""
        self.incoming = positions

    def see(self, activation: Tensor) -> None:
        """At the pass's first site: a pass that starts new sequences (a prompt) decides afresh."""
        positions, self.incoming = self.incoming, None
        if positions is None:
            return
        batch, width = activation.shape[:2]
        if positions.starts_sequence(batch, width):  # not a KV-cache step: its prompt decides
            self.gate, self.mask, self.pending = None, positions.real(batch, width), True

    def decide(self, activations: Tensor) -> None:
        """Score the prompt pass's activations at the condition's site and set the gate."""
        scores = self.condition.score(activations, self.mask).detach()
        self.gate = self.condition.holds(scores)
        self.pending = False
        self.decisions.append(Decision(scores.cpu(), self.gate.cpu()))


@dataclass
class GatedOperator:
    """An operator whose delta counts only for the rows the condition let through.

    ``capture`` makes it read the condition first (when its site is the condition's);
    ``steer=False`` makes it a capture-only operator that never changes anything.
    Rows not steered get a delta of ``-0.0``, so ``activation + delta`` is the
    activation bit for bit.
    """

    state: ConditionalState
    base: Operator = field(default_factory=addition_operator)
    capture: bool = False
    steer: bool = True

    def __call__(self, activation: Tensor, vector: Tensor) -> Tensor:
        state = self.state
        state.see(activation)
        if self.capture and state.pending:
            state.decide(activation)
        keep = torch.full_like(activation, -0.0)
        if not self.steer or state.gate is None:  # before the condition's site on the prompt pass
            return keep
        gate = state.gate.to(activation.device)
        if gate.shape[0] != activation.shape[0]:
            raise InvalidArgumentError(
                f"the condition was decided for {gate.shape[0]} rows but a pass has {activation.shape[0]}; "
                "run each batch from its prompt (a new generate call) inside the with block."
            )
        delta = self.base(activation, vector)
        return torch.where(gate.view(-1, *([1] * (activation.dim() - 1))), delta, keep)


@contextmanager
def conditional_steering(
    model: Any,
    vector: "SteeringVector",
    condition: Condition,
    multiplier: float = 1.0,
    *,
    operator: Operator | None = None,
    min_token_index: int = 0,
    token_indices: TokenIndices = None,
    tokenizer: Any = None,
) -> Iterator[ConditionalState]:
    """Steer with ``vector`` only the sequences whose prompt meets ``condition``, inside a ``with`` block.

    Each prompt pass (a forward pass starting at position 0) scores its rows at the
    condition's site and fixes, per row, whether that sequence is steered; the
    KV-cache steps that follow keep the decision. Steered rows get exactly what
    ``vector.apply(model, multiplier=...)`` would do at every site after the
    condition's (so with the condition at or before the steered layers, steered
    rows equal plain steering bit for bit); steered sites that run *before* the
    condition's site are steered from the first generated token on. Rows that fail
    the condition are bit-identical to the unsteered model.

    Yields a :class:`ConditionalState` with the scores and decisions. Batches of
    prompts with different lengths need an attention mask (``generate`` passes one);
    both padding sides work.

    Example:
        >>> food = fit_condition(model, topic_vec, food_prompts, travel_prompts, layer=2).condition
        >>> with conditional_steering(model, sentiment_vec, food, multiplier=2.0) as state:
        ...     out = model.generate(["The dinner was", "The flight was"], max_new_tokens=8, verbose=False)
        >>> state.steered
        tensor([ True, False])
    """
    backend = backend_for(model, tokenizer)
    vectors = vector.resolved(backend.n_layers).layer_activations
    layer_type = vector.layer_type
    backend.check_vector(vectors, layer_type)
    site = _condition_site(backend, condition)
    state = ConditionalState(replace(condition, layer=site[0]))
    base = operator or addition_operator()
    shared = site[1] == layer_type and site[0] in vectors
    plain = {layer: v for layer, v in vectors.items() if not (shared and layer == site[0])}
    first = min([site[0], *vectors])
    with ExitStack() as stack:
        stack.enter_context(_pass_watcher(backend, first, state))
        if not shared:  # the condition's site gets a capture that changes nothing
            zero = {site[0]: torch.zeros(backend.d_model)}
            stack.enter_context(
                backend.apply(make_spec(zero, site[1], 1.0, GatedOperator(state, base, True, False), 0, None))
            )
        else:
            spec = make_spec(
                {site[0]: vectors[site[0]]},
                layer_type,
                multiplier,
                GatedOperator(state, base, True),
                min_token_index,
                token_indices,
            )
            stack.enter_context(backend.apply(spec))
        if plain:
            spec = make_spec(plain, layer_type, multiplier, GatedOperator(state, base), min_token_index, token_indices)
            stack.enter_context(backend.apply(spec))
        yield state


def _condition_site(backend: Backend, condition: Condition) -> tuple[int, str]:
    """The condition's ``(layer, layer_type)`` with a non-negative layer, checked against the model."""
    if not isinstance(condition, Condition):
        raise InvalidArgumentError(
            f"condition must be a steerlens Condition, got {type(condition).__name__}; build one with "
            "Condition.from_vector(...) or fit_condition(...)."
        )
    (layer,) = resolve_layers([condition.layer], backend.n_layers)
    layer_type = stored_layer_type(backend, condition.layer_type, [layer])  # steering-vectors' names, as trained
    if condition.direction.shape[0] != backend.d_model:
        raise ModelMismatchError(
            f"the condition's direction has d_model {condition.direction.shape[0]} but the model has "
            f"{backend.d_model}; build it from a vector trained on this model."
        )
    try:
        backend.check_vector({layer: condition.direction}, layer_type)
    except ModelMismatchError as error:
        raise ModelMismatchError(
            f"the condition cannot be read at {layer_type} of layer {layer} during generation: {error}"
        ) from None
    return layer, layer_type


@contextmanager
def _pass_watcher(backend: Backend, first_layer: int, state: ConditionalState) -> Iterator[None]:
    """Tell ``state`` where each forward pass starts, before the first of our sites runs."""
    handle = backend.watch_passes(first_layer, state.begin_pass)
    try:
        yield
    finally:
        handle.remove()


def condition_scores(
    model: Any,
    condition: Condition,
    prompts: Prompts,
    **settings: Unpack[SettingsKeywords],
) -> Float[Tensor, "n_prompts"]:
    """The condition's score of each prompt, as :func:`conditional_steering` computes it on the prompt pass.

    Reads the unsteered model (nothing after the condition's layer is computed). Use
    it to look at scores or to fit a threshold
    (:func:`steerlens.conditional.fit.fit_condition` does). Prompts are strings
    or token ids. ``settings``: :class:`~steerlens.settings.Settings` fields by name
    (``tokenizer``, ``batch_size`` (default 32), ``padding_side``, ``prepend_bos`` (None: the
    model's default, which is what ``generate`` gives the model by default; see
    :class:`~steerlens.tokens.TokenPolicy`)) or ``settings=``, see :mod:`steerlens.settings`.

    Example:
        >>> condition_scores(model, food, ["The dinner was", "The flight was"])
        tensor([ 3.1, -2.4])
    """
    run = open_run(model, settings, "condition_scores", PROMPT_READING, batch_size=32)
    return scores_on(run, condition, prompts)


@torch.no_grad()
def scores_on(run: Run, condition: Condition, prompts: Prompts) -> Float[Tensor, "n_prompts"]:
    """:func:`condition_scores` on ``run``'s model, prompts read and batched as its settings say."""
    backend = run.backend
    prepared = run.prepare(prompts)
    layer, layer_type = _condition_site(backend, condition)
    scores = torch.empty(len(prepared))
    for batch in prepared.batches(run.batch_size):
        acts = backend.read(batch, [(layer, layer_type)])[(layer, layer_type)]
        batch_scores = condition.score(acts, batch.attention_mask.bool())
        scores[batch.indices] = batch_scores.float().cpu()
    return scores
