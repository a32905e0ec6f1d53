"""Stage 3, tokens to activations: read every pair's activations at its read token.

Prompts are cut after their read token and batched by length, whatever pair they belong
to; each forward pass stops right after the deepest requested layer and keeps only the
requested sites. Outputs come back in the caller's order of pairs.
Prompts are encoded by the backend's one tokenization policy
(:class:`~steerlens.tokens.TokenPolicy`): ``prepend_bos`` has TransformerLens' meaning,
a prompt starting with the BOS (a chat template's ``<s>``) never gets a second one,
and token-id prompts are used as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from typing_extensions import Unpack

from steerlens.backends import stored_layer_type
from steerlens.backends.last_token import last_token_resid
from steerlens.backends.layer_config import ModelLayerConfig
from steerlens.layers import LayerType, check_layer_type, resolve_layers
from steerlens.samples import SampleLike, SteeringVectorTrainingSample, normalize_samples
from steerlens.settings import READING, Run, Settings, SettingsKeywords, folded, settings_from
from steerlens.tokens import PromptBatch, ReadIndex, iter_batches, resolve_read_index

LayerActs = dict[int, Float[Tensor, "batch d_model"]]

POSITIONAL_DEFAULTS: dict[str, Any] = {"tokenizer": None, "show_progress": False, "batch_size": 1}
"""steering-vectors' defaults of the settings it takes by position (``tokenizer``, ``show_progress``, ``batch_size``)."""


@dataclass(frozen=True)
class PairReading:
    """One read of contrast pairs, checked before any forward pass: what :func:`iter_activation_batches` reads.

    ``layers`` are non-negative; ``layer_type`` is the name the vector is stored under
    (:func:`~steerlens.backends.stored_layer_type`); ``read_token_index`` is the default
    read index (a sample's own indices win).
    """

    run: Run
    samples: list[SteeringVectorTrainingSample]
    layers: list[int]
    layer_type: str
    read_token_index: ReadIndex


def pair_settings(keywords: Mapping[str, Any], verb: str, uses: frozenset[str], **positional: Any) -> Settings:
    """A steering-vectors door's settings: its ``**settings`` with the settings it takes by position folded in.

    ``positional`` are the door's ``tokenizer``, ``show_progress`` and ``batch_size``: a value
    other than its steering-vectors default (:data:`POSITIONAL_DEFAULTS`) wins over a
    ``settings=`` value's field; at its default, the ``settings=`` field is used if set, else
    the default.

    Example:
        >>> pair_settings({"settings": Settings(batch_size=8)}, "train", READING, batch_size=1).batch_size
        8
        >>> pair_settings({"settings": Settings(batch_size=8)}, "train", READING, batch_size=4).batch_size
        4
    """
    if positional.get("show_progress") is not None:
        positional["show_progress"] = bool(positional["show_progress"])  # steering-vectors takes any truthy value
    return settings_from(
        folded(keywords, POSITIONAL_DEFAULTS, **positional), verb, uses, show_progress=False, batch_size=1
    )


def open_pair_reading(
    model: Any,
    training_samples: Iterable[SampleLike],
    settings: Settings,
    *,
    layers: int | Iterable[int] | None,
    layer_type: str,
    layer_config: ModelLayerConfig | None,
    read_token_index: ReadIndex,
) -> PairReading:
    """The steering-vectors doors' one step: ``model``'s backend resolved once (with ``layer_config``), then
    :func:`pair_reading` on it.

    Example:
        >>> reading = open_pair_reading(model, pairs, Settings(batch_size=4), layers=[1], layer_type="decoder_block",
        ...                             layer_config=None, read_token_index=-1)
        >>> reading.layers, reading.layer_type
        ([1], 'resid_post')
    """
    return pair_reading(Run.of(model, settings, layer_config), training_samples, layers, layer_type, read_token_index)


def pair_reading(
    run: Run,
    training_samples: Iterable[SampleLike],
    layers: int | Iterable[int] | None,
    layer_type: str,
    read_token_index: ReadIndex = -1,
) -> PairReading:
    """Check every argument of a read of ``training_samples`` on ``run``'s model, before any forward pass."""
    check_layer_type(layer_type)
    backend = run.backend
    backend.check_tokenizer()
    samples = normalize_samples(training_samples)
    layer_list = resolve_layers(layers, backend.n_layers, layer_type)
    layer_type = stored_layer_type(backend, layer_type, layer_list)
    backend.check_sites([(layer, layer_type) for layer in layer_list])
    return PairReading(run, samples, layer_list, layer_type, read_token_index)


MIN_SHARED_PREFIX = 8
"""Tokens a pair's two prompts must share at the start to be read as one prefix and two continuations
(below that, two extra forward calls per batch cost more than the tokens they save)."""


def shared_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens ``a`` and ``b`` share at the start, leaving each at least its last (read) token.

    Example:
        >>> shared_prefix_length([1, 5, 6, 7], [1, 5, 6, 9])
        3
    """
    limit = min(len(a), len(b)) - 1
    k = 0
    while k < limit and a[k] == b[k]:
        k += 1
    return k


def iter_activation_batches(
    reading: PairReading, tqdm_desc: str = "Reading activations"
) -> Iterator[tuple[list[int], LayerActs]]:
    """Yield ``(rows, activations)`` at the read token, ``2 * batch_size`` prompts at a time.

    Row ``2i`` is pair ``i``'s positive prompt, row ``2i + 1`` its negative one; ``rows``
    says which rows a batch holds, in the order of its activations. Each prompt is cut
    right after its read token (attention is causal: later tokens cannot change what
    is read). Pairs whose prompts share a start of at least :data:`MIN_SHARED_PREFIX`
    tokens (A/B items differ only in the answer) run that start once, into the model's KV
    cache, and then each prompt's rest (:meth:`~steerlens.backends.Backend.read_continuations`).
    Other prompts are batched by length, longest first, whatever pair they belong to, so
    almost no compute goes to padding or to positions nobody reads. Prompts are encoded,
    batched and the bar shown as ``reading.run``'s settings say (``show_progress`` None: no bar).
    """
    run, samples, layers, layer_type = reading.run, reading.samples, reading.layers, reading.layer_type
    backend, batch_size, read_token_index = run.backend, run.batch_size, reading.read_token_index
    prepared = run.prepare([text for s in samples for text in (s.positive_str, s.negative_str)])
    overrides = [i for s in samples for i in (s.read_positive_token_index, s.read_negative_token_index)]
    reads = [
        resolve_read_index(read_token_index if o is None else o, p, len(ids))
        for p, o, ids in zip(prepared.prompts, overrides, prepared.encoded)
    ]
    # Every row now ends at its read token, so each batch reads its rows' last real token.
    cut = [ids if read == len(ids) - 1 else ids[: read + 1] for ids, read in zip(prepared.encoded, reads)]
    shared = {}
    if backend.can_continue:
        for pair in range(len(samples)):
            k = shared_prefix_length(cut[2 * pair], cut[2 * pair + 1])
            if k >= MIN_SHARED_PREFIX:
                shared[pair] = k
    whole = [row for row in range(len(cut)) if row // 2 not in shared]
    # Pairs sharing the longest starts first; a batch runs the shortest start among its pairs.
    by_start = sorted(shared, key=lambda pair: (-shared[pair], len(cut[2 * pair]) + len(cut[2 * pair + 1])))
    paired = [by_start[i : i + batch_size] for i in range(0, len(by_start), batch_size)]
    sites = [(layer, layer_type) for layer in layers]
    total = -(-len(whole) // (2 * batch_size)) + len(paired)
    progress = tqdm(total=total, desc=tqdm_desc, disable=not run.settings.show_progress)
    with progress:
        for batch in iter_batches(
            [cut[row] for row in whole], 2 * batch_size, prepared.pad_id, prepared.padding_side, prepared.device, True
        ):
            acts = backend.read(batch, sites, last_only=True)
            yield [whole[i] for i in batch.indices], _at_last(acts, sites, batch, backend.device)
            progress.update()
        for pairs in paired:
            start = min(shared[pair] for pair in pairs)
            prefix = torch.tensor([cut[2 * pair][:start] for pair in pairs], device=prepared.device)
            halves = [
                next(
                    iter_batches(
                        [cut[2 * pair + side][start:] for pair in pairs],
                        len(pairs),
                        prepared.pad_id,
                        "right",
                        prepared.device,
                    )
                )
                for side in (0, 1)
            ]
            acts = backend.read_continuations(prefix, halves, sites)
            parts = [_at_last(a, sites, half, backend.device) for a, half in zip(acts, halves)]
            rows = [2 * pair + side for side in (0, 1) for pair in pairs]
            yield rows, {layer: torch.cat([part[layer] for part in parts]) for layer in layers}
            progress.update()


def _at_last(acts: dict, sites: list, batch: PromptBatch, device: torch.device) -> LayerActs:
    """Each row's activation at its last real token, per layer."""
    last = batch.last
    return {site[0]: last_token_resid(acts[site], last).to(device) for site in sites}


def split_pairs(rows: list[int], acts: LayerActs) -> tuple[LayerActs, LayerActs]:
    """A batch's positive rows and its negative rows (not paired with each other: for sums only)."""
    pos_at = [k for k, row in enumerate(rows) if row % 2 == 0]
    neg_at = [k for k, row in enumerate(rows) if row % 2 == 1]
    return (
        {layer: act[pos_at] for layer, act in acts.items()},
        {layer: act[neg_at] for layer, act in acts.items()},
    )


def in_caller_order(batches: Iterable[tuple[list[int], LayerActs]]) -> tuple[LayerActs, LayerActs]:
    """All batches joined: ``(positive, negative)``, one ``[n_pairs, d_model]`` tensor per layer, in the caller's order."""
    rows: list[int] = []
    parts: dict[int, list[Tensor]] = {}
    for batch_rows, acts in batches:
        rows += batch_rows
        for layer, act in acts.items():
            parts.setdefault(layer, []).append(act)
    inverse = torch.argsort(torch.tensor(rows))
    joined = {layer: torch.cat(p)[inverse.to(p[0].device)] for layer, p in parts.items()}
    return {layer: a[0::2] for layer, a in joined.items()}, {layer: a[1::2] for layer, a in joined.items()}


def extract_activations(
    model: object,
    tokenizer: object,
    training_samples: Iterable[SampleLike],
    layers: int | Iterable[int] | None = None,
    layer_type: LayerType = "decoder_block",
    layer_config: ModelLayerConfig | None = None,
    move_to_cpu: bool = False,
    read_token_index: ReadIndex = -1,
    show_progress: bool = False,
    batch_size: int = 1,
    tqdm_desc: str = "Extracting activations",
    **settings: Unpack[SettingsKeywords],
) -> tuple[dict[int, list[Tensor]], dict[int, list[Tensor]]]:
    """Activations at the read token for every pair, batch by batch: ``(positive, negative)``.

    Each is ``{layer: [tensor of shape [batch, d_model] per batch]}`` (steering-vectors'
    layout); ``torch.cat`` a layer's list for one ``[n_pairs, d_model]`` tensor, or pass
    both dicts to :func:`~steerlens.training.train.aggregate_activations`.
    Parameters are those of steering-vectors 0.12.2, in its order. ``settings``:
    :class:`~steerlens.settings.Settings` fields by name (``padding_side``, ``prepend_bos``:
    TransformerLens' switch, None: the model's default, applied by the one tokenization
    policy :class:`~steerlens.tokens.TokenPolicy`) or ``settings=``, see :mod:`steerlens.settings`;
    ``tokenizer``, ``show_progress`` and ``batch_size`` given here other than their defaults
    win over ``settings=``'s, left at their defaults they take its.

    Example:
        >>> pos, neg = extract_activations(model, None, [("I love it", "I hate it")], layers=[1])
        >>> torch.cat(pos[1]).shape
        torch.Size([1, 64])
    """
    chosen = pair_settings(
        settings,
        "extract_activations",
        READING,
        tokenizer=tokenizer,
        show_progress=show_progress,
        batch_size=batch_size,
    )
    reading = open_pair_reading(
        model,
        training_samples,
        chosen,
        layers=layers,
        layer_type=layer_type,
        layer_config=layer_config,
        read_token_index=read_token_index,
    )
    pos, neg = in_caller_order(iter_activation_batches(reading, tqdm_desc))

    def batched(acts: Tensor) -> list[Tensor]:
        # Back in the caller's order, in chunks of batch_size pairs (steering-vectors' layout).
        return list((acts.cpu() if move_to_cpu else acts).split(reading.run.batch_size))

    layer_list = reading.layers
    return {layer: batched(pos[layer]) for layer in layer_list}, {layer: batched(neg[layer]) for layer in layer_list}
