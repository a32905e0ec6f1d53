"""Reading a vector's sites on plain prompts: its layers resolved against a model, and the
activations at every real token of each prompt.

Token projections, residual norms and the layer report all look at a steering vector's
hook points (``layer_type`` at each of its layers) on prompts rather than pairs; they
share this one reader, so "which layers", "which tokens" and "is that token the BOS"
are decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.backends import Backend
from steerlens.errors import LayerError, ModelMismatchError
from steerlens.evaluation.sweep import prompt_batches
from steerlens.layers import resolve_layers
from steerlens.tokens import PaddingSide
from steerlens.vector import SteeringVector


def vector_layers(backend: Backend, vector: SteeringVector, layers: int | Iterable[int] | None) -> dict[int, Tensor]:
    """``{layer: direction}`` of ``vector`` at ``layers`` (None: all of its layers), keys non-negative.

    Negative keys of the vector and of ``layers`` count from the end of the model, so
    ``layers=[-1]`` picks a vector trained with ``layers=[3]`` on a 4-layer model.

    Example:
        >>> vector_layers(backend_for(model), vec, [-1])
        {3: tensor([...])}
    """
    n_layers = backend.n_layers
    keys = list(vector.layer_activations)
    resolved = dict(zip(resolve_layers(keys, n_layers), vector.layer_activations.values()))
    wanted = sorted(resolved) if layers is None else resolve_layers(layers, n_layers)
    missing = [layer for layer in wanted if layer not in resolved]
    if missing:
        raise LayerError(
            f"the vector has no direction at layers {missing}; it has {sorted(resolved)}. Train it at those "
            "layers (layers=None trains every layer) or ask for layers it has."
        )
    for layer in wanted:
        if resolved[layer].shape[-1] != backend.d_model:
            raise ModelMismatchError(
                f"the vector has d_model {resolved[layer].shape[-1]} but the model has {backend.d_model}; "
                "it was trained on another model. Train it on this model."
            )
    backend.check_sites([(layer, vector.layer_type) for layer in wanted])
    return {layer: resolved[layer] for layer in wanted}


def unit(direction: Tensor, layer: int) -> Float[Tensor, "d_model"]:
    """``direction`` scaled to norm 1, in float32 (a zero direction is an error)."""
    norm = direction.float().norm()
    if norm == 0:
        raise ModelMismatchError(f"the vector is zero at layer {layer}; it has no direction to project on.")
    return direction.float() / norm


@dataclass(frozen=True)
class PromptActivations:
    """Activations at every real token of one prompt, read at a vector's sites."""

    index: int
    """Position of the prompt in the caller's list."""
    token_ids: list[int]
    acts: dict[int, Float[Tensor, "pos d_model"]]
    """``{layer: activations}``, one row per real token, float32."""
    bos: bool
    """Whether the first token is the tokenizer's BOS (carries nothing of the prompt)."""


def iter_prompt_activations(
    backend: Backend,
    prompts: Sequence[str],
    layers: Sequence[int],
    layer_type: str,
    batch_size: int = 32,
    padding_side: PaddingSide | None = None,
) -> Iterator[PromptActivations]:
    """Each prompt's activations at ``(layer, layer_type)`` for every layer, padding dropped.

    Prompts are encoded with the backend's convention and batched longest first, so
    they come in batch order; ``PromptActivations.index`` says which prompt each is.
    Nothing after the deepest layer is computed.

    Example:
        >>> for item in iter_prompt_activations(backend, ["The film was"], [2], "resid_post"):
        ...     item.acts[2].shape
        torch.Size([5, 128])
    """
    bos_id = getattr(backend.tokenizer, "bos_token_id", None)
    sites = [(layer, layer_type) for layer in layers]
    for batch in prompt_batches(backend, list(prompts), batch_size, padding_side):
        acts = backend.read(batch, sites)
        for row, index in enumerate(batch.indices):
            length = batch.padded.lengths[row]
            cols = slice(batch.column(row, 0), batch.column(row, 0) + length)
            ids = batch.tokens[row, cols].tolist()
            yield PromptActivations(
                index=index,
                token_ids=ids,
                acts={layer: acts[(layer, layer_type)][row, cols].float() for layer in layers},
                bos=bos_id is not None and ids[0] == bos_id,
            )
        del acts


def content_rows(item: PromptActivations) -> slice:
    """The rows of a prompt's tokens that carry its content: all but a leading BOS (unless it is alone)."""
    return slice(1, None) if item.bos and len(item.token_ids) > 1 else slice(0, None)


def as_cpu(tensor: Tensor) -> Tensor:
    """``tensor`` detached on the CPU (for tables)."""
    return tensor.detach().to("cpu", torch.float32)
