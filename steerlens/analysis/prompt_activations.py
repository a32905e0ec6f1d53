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
from steerlens.errors import ModelMismatchError
from steerlens.tokens import PreparedPrompts
from steerlens.vector import SteeringVector, vector_directions


def vector_layers(backend: Backend, vector: SteeringVector, layers: int | Iterable[int] | None) -> dict[int, Tensor]:
    """``{layer: direction}`` of ``vector`` at ``layers`` (None: all of its layers), checked against the model.

    Which layers is :func:`steerlens.vector.vector_directions` (negative keys and layers
    count from the end); this adds the model's checks: the vector's size and that its
    sites can be read.

    Example:
        >>> vector_layers(backend_for(model), vec, [-1])
        {3: tensor([...])}
    """
    directions = vector_directions(vector, layers, backend.n_layers)
    for direction in directions.values():
        if direction.shape[-1] != backend.d_model:
            raise ModelMismatchError(
                f"the vector has d_model {direction.shape[-1]} but the model has {backend.d_model}; "
                "it was trained on another model. Train it on this model."
            )
    backend.check_sites([(layer, vector.layer_type) for layer in directions])
    return directions


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
    prepared: PreparedPrompts,
    layers: Sequence[int],
    layer_type: str,
    batch_size: int = 32,
) -> Iterator[PromptActivations]:
    """Each prompt's activations at ``(layer, layer_type)`` for every layer, padding dropped.

    ``prepared`` comes from :func:`~steerlens.tokens.prepare_prompts`; prompts are batched
    longest first, so they come in batch order; ``PromptActivations.index`` says which
    prompt each is. Nothing after the deepest layer is computed.

    Example:
        >>> prepared = prepare_prompts(backend, ["The film was"])
        >>> for item in iter_prompt_activations(backend, prepared, [2], "resid_post"):
        ...     item.acts[2].shape
        torch.Size([5, 128])
    """
    bos_id = getattr(backend.tokenizer, "bos_token_id", None)
    sites = [(layer, layer_type) for layer in layers]
    for batch in prepared.batches(batch_size):
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
