"""Stage 3, tokens to activations: read every pair's activations at its read token.

Positives and negatives of each pair share one forward pass (interleaved rows), which
stops right after the deepest requested layer and keeps only the requested sites.
Prompts are encoded by the backend's one tokenization policy
(:class:`~steerlens.tokens.TokenPolicy`): ``prepend_bos`` has TransformerLens' meaning,
a prompt starting with the BOS (a chat template's ``<s>``) never gets a second one,
and token-id prompts are used as they are.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.backends import Backend, backend_for
from steerlens.backends.layer_config import ModelLayerConfig
from steerlens.checks import check_batch_size, check_padding_side
from steerlens.layers import LayerType, check_layer_type, resolve_layers
from steerlens.samples import SampleLike, SteeringVectorTrainingSample, normalize_samples
from steerlens.tokens import PaddingSide, ReadIndex, check_prepend_bos, iter_batches, resolve_read_index

LayerActs = dict[int, Float[Tensor, "batch d_model"]]


def prepare(
    model: object,
    tokenizer: object,
    training_samples: Iterable[SampleLike],
    layers: int | Iterable[int] | None,
    layer_type: str,
    layer_config: ModelLayerConfig | None,
    batch_size: int,
) -> tuple[Backend, list[SteeringVectorTrainingSample], list[int], str]:
    """Resolve the model once and validate every argument, before any forward pass.

    Returns the backend, the samples, the layers (non-negative) and the canonical layer type.
    """
    backend = backend_for(model, tokenizer, layer_config)
    layer_type = check_layer_type(layer_type)
    check_batch_size(batch_size)
    backend.check_tokenizer()
    samples = normalize_samples(training_samples)
    layer_list = resolve_layers(layers, backend.n_layers)
    backend.check_sites([(layer, layer_type) for layer in layer_list])
    return backend, samples, layer_list, layer_type


def iter_activation_batches(
    backend: Backend,
    samples: Sequence[SteeringVectorTrainingSample],
    layers: list[int],
    layer_type: str,
    read_token_index: ReadIndex,
    batch_size: int,
    padding_side: PaddingSide | None,
    show_progress: bool,
    tqdm_desc: str,
    *,
    prepend_bos: bool | None = None,
) -> Iterator[tuple[list[int], LayerActs, LayerActs]]:
    """Yield ``(pair indices, positive, negative)`` activations at the read token, ``batch_size`` pairs at a time.

    Pairs are grouped by token length (longest first), so little compute goes to
    padding; the pair indices say where each row belongs in the caller's order. No
    column after a batch's last read token is computed.
    """
    side = check_padding_side(padding_side or backend.default_padding_side)
    check_prepend_bos(prepend_bos)
    # Row 2i is pair i's positive prompt, row 2i+1 its negative one.
    prompts = [text for s in samples for text in (s.positive_str, s.negative_str)]
    overrides = [i for s in samples for i in (s.read_positive_token_index, s.read_negative_token_index)]
    encoded = [backend.encode(p, prepend_bos) for p in prompts]
    reads = [
        resolve_read_index(read_token_index if o is None else o, p, len(ids))
        for p, o, ids in zip(prompts, overrides, encoded)
    ]
    order = sorted(range(len(samples)), key=lambda i: -max(len(encoded[2 * i]), len(encoded[2 * i + 1])))
    rows = [row for i in order for row in (2 * i, 2 * i + 1)]
    sites = [(layer, layer_type) for layer in layers]
    batches = iter_batches([encoded[r] for r in rows], 2 * batch_size, backend.pad_id, side, backend.device)
    total = -(-len(samples) // batch_size)
    for batch in tqdm(batches, total=total, desc=tqdm_desc, disable=not show_progress):
        cols = torch.tensor([batch.column(j, reads[rows[k]]) for j, k in enumerate(batch.indices)])
        # Causal attention: columns after the last read one cannot change what is read.
        width = int(cols.max()) + 1
        if width < batch.tokens.shape[1]:
            batch = replace(batch, tokens=batch.tokens[:, :width], attention_mask=batch.attention_mask[:, :width])
        acts = backend.read(batch, sites)
        pos: LayerActs = {}
        neg: LayerActs = {}
        for layer in layers:
            act = acts[(layer, layer_type)]
            read = act[torch.arange(len(cols), device=act.device), cols.to(act.device)].to(backend.device)
            pos[layer], neg[layer] = read[0::2], read[1::2]
        del acts
        yield [order[k // 2] for k in batch.indices[0::2]], pos, neg


def in_caller_order(
    batches: Iterable[tuple[list[int], LayerActs, LayerActs]],
) -> tuple[list[int], LayerActs, LayerActs]:
    """All batches joined, rows back in the caller's order of pairs."""
    indices: list[int] = []
    pos_parts: dict[int, list[Tensor]] = {}
    neg_parts: dict[int, list[Tensor]] = {}
    for batch_indices, pos, neg in batches:
        indices += batch_indices
        for layer in pos:
            pos_parts.setdefault(layer, []).append(pos[layer])
            neg_parts.setdefault(layer, []).append(neg[layer])
    inverse = torch.argsort(torch.tensor(indices))
    return (
        sorted(indices),
        {layer: torch.cat(parts)[inverse.to(parts[0].device)] for layer, parts in pos_parts.items()},
        {layer: torch.cat(parts)[inverse.to(parts[0].device)] for layer, parts in neg_parts.items()},
    )


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
    *,
    padding_side: PaddingSide | None = None,
    prepend_bos: bool | None = None,
) -> tuple[dict[int, list[Tensor]], dict[int, list[Tensor]]]:
    """Activations at the read token for every pair, batch by batch: ``(positive, negative)``.

    Each is ``{layer: [tensor of shape [batch, d_model] per batch]}`` (steering-vectors'
    layout); ``torch.cat`` a layer's list for one ``[n_pairs, d_model]`` tensor, or pass
    both dicts to :func:`~steerlens.training.train.aggregate_activations`.
    ``prepend_bos`` (None: the model's default) is TransformerLens' switch, applied by
    the one tokenization policy (:class:`~steerlens.tokens.TokenPolicy`).

    Example:
        >>> pos, neg = extract_activations(model, None, [("I love it", "I hate it")], layers=[1])
        >>> torch.cat(pos[1]).shape
        torch.Size([1, 64])
    """
    backend, samples, layer_list, layer_type = prepare(
        model, tokenizer, training_samples, layers, layer_type, layer_config, batch_size
    )
    _, pos, neg = in_caller_order(iter_activation_batches(
        backend, samples, layer_list, layer_type, read_token_index, batch_size, padding_side,
        show_progress, tqdm_desc, prepend_bos=prepend_bos,
    ))

    def batched(acts: Tensor) -> list[Tensor]:
        # Back in the caller's order, in chunks of batch_size pairs (steering-vectors' layout).
        return list((acts.cpu() if move_to_cpu else acts).split(batch_size))

    return {layer: batched(pos[layer]) for layer in layer_list}, {layer: batched(neg[layer]) for layer in layer_list}

