"""Stage 3, tokens to activations: read every pair's activations at its read token.

Positives and negatives of each pair share one forward pass (interleaved rows), which
stops right after the deepest requested layer and keeps only the requested sites.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.backends import Backend, backend_for
from steerlens.checks import check_batch_size, check_padding_side
from steerlens.layers import check_layer_type, resolve_layers
from steerlens.samples import SampleLike, SteeringVectorTrainingSample, normalize_samples
from steerlens.tokens import PaddingSide, ReadIndex, iter_batches, resolve_read_index

LayerActs = dict[int, Float[Tensor, "batch d_model"]]


def prepare(
    model: object,
    tokenizer: object,
    training_samples: Iterable[SampleLike],
    layers: int | Iterable[int] | None,
    layer_type: str,
    batch_size: int,
) -> tuple[Backend, list[SteeringVectorTrainingSample], list[int]]:
    """Resolve the model once and validate every argument, before any forward pass."""
    backend = backend_for(model, tokenizer)
    check_layer_type(layer_type)
    check_batch_size(batch_size)
    backend.check_tokenizer()
    samples = normalize_samples(training_samples)
    layer_list = resolve_layers(layers, backend.n_layers)
    backend.check_sites([(layer, layer_type) for layer in layer_list])
    return backend, samples, layer_list


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
) -> Iterator[tuple[LayerActs, LayerActs]]:
    """Yield ``(positive, negative)`` activations at the read token, ``batch_size`` pairs at a time."""
    side = check_padding_side(padding_side or backend.default_padding_side)
    # Row 2i is pair i's positive prompt, row 2i+1 its negative one.
    prompts = [text for s in samples for text in (s.positive_str, s.negative_str)]
    overrides = [i for s in samples for i in (s.read_positive_token_index, s.read_negative_token_index)]
    encoded = [backend.encode(p) for p in prompts]
    reads = [
        resolve_read_index(read_token_index if o is None else o, p, len(ids))
        for p, o, ids in zip(prompts, overrides, encoded)
    ]
    sites = [(layer, layer_type) for layer in layers]
    batches = iter_batches(encoded, 2 * batch_size, backend.pad_id, side, backend.device)
    total = -(-len(samples) // batch_size)
    for batch in tqdm(batches, total=total, desc=tqdm_desc, disable=not show_progress):
        cols = torch.tensor([batch.column(row, reads[i]) for row, i in enumerate(batch.indices)])
        acts = backend.read(batch, sites)
        pos: LayerActs = {}
        neg: LayerActs = {}
        for layer in layers:
            act = acts[(layer, layer_type)]
            read = act[torch.arange(len(cols), device=act.device), cols.to(act.device)].to(backend.device)
            pos[layer], neg[layer] = read[0::2], read[1::2]
        del acts
        yield pos, neg


def extract_activations(
    model: object,
    tokenizer: object,
    training_samples: Iterable[SampleLike],
    layers: int | Iterable[int] | None = None,
    layer_type: str = "resid_post",
    read_token_index: ReadIndex = -1,
    batch_size: int = 1,
    show_progress: bool = False,
    move_to_cpu: bool = False,
    tqdm_desc: str = "Extracting activations",
    padding_side: PaddingSide | None = None,
) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
    """Activations at the read token for every pair: ``(positive, negative)``, each ``{layer: [n, d_model]}``.

    Example:
        >>> pos, neg = extract_activations(model, None, [("I love it", "I hate it")], layers=[1])
        >>> pos[1].shape
        torch.Size([1, 64])
    """
    backend, samples, layer_list = prepare(model, tokenizer, training_samples, layers, layer_type, batch_size)
    pos_rows: dict[int, list[Tensor]] = {layer: [] for layer in layer_list}
    neg_rows: dict[int, list[Tensor]] = {layer: [] for layer in layer_list}
    for pos, neg in iter_activation_batches(
        backend, samples, layer_list, layer_type, read_token_index, batch_size, padding_side,
        show_progress, tqdm_desc,
    ):
        for layer in layer_list:
            pos_rows[layer].append(pos[layer].cpu() if move_to_cpu else pos[layer])
            neg_rows[layer].append(neg[layer].cpu() if move_to_cpu else neg[layer])
    return (
        {layer: torch.cat(rows) for layer, rows in pos_rows.items()},
        {layer: torch.cat(rows) for layer, rows in neg_rows.items()},
    )
