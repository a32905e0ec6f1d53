"""What a kind of model must provide for steerlens to train, steer and evaluate on it.

Everything above this layer (training, ``SteeringVector.apply``, sweeps, logit
comparison, generation helpers) talks to a :class:`Backend` only; which class
serves a given model is decided in one place, :func:`steerlens.backends.backend_for`.
Layer types keep TransformerLens' names on every backend (``resid_post`` of layer
L is ``blocks.{L}.hook_resid_post``, the output of decoder layer L).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.hooks import PassPositions, SteeringPatchHandle, SteeringSpec
from steerlens.tokens import PromptBatch, PromptInput

if TYPE_CHECKING:
    from steerlens.backends.hf_layout import HFLayout

Site = tuple[int, str]
"""``(layer, layer_type)``: one hook point, e.g. ``(3, "resid_post")``."""


def checkpoint_name(name_or_path: Any) -> str:
    """The last component of a checkpoint's hub name or folder (``"org/model/"`` -> ``"model"``), "" if none."""
    return str(name_or_path or "").rstrip("/\\").replace("\\", "/").split("/")[-1]


def numeric_matrix(weight: Any) -> Tensor | None:
    """``weight`` if it is a 2-D float tensor holding numbers (not on the ``meta`` device), else None."""
    ok = isinstance(weight, Tensor) and weight.dim() == 2 and weight.is_floating_point() and not weight.is_meta
    return weight if ok else None


class SweepPass(Protocol):
    """One batch of prompts in a layer × multiplier sweep: the clean pass is shared by every cell."""

    clean: Float[Tensor, "batch head_in"]
    """Input of :meth:`Backend.head` at each row's last real token, unsteered."""

    def steered(self, layer: int, specs: Sequence[SteeringSpec]) -> list[Tensor | None]:
        """Head inputs with ``layer`` steered by each spec (``None``: the activation is unchanged)."""
        ...


class Backend(Protocol):
    """One kind of model (HookedTransformer, Hugging Face model, ...) behind steerlens' verbs."""

    model: Any
    """The object hooks are installed on."""
    tokenizer: Any
    """The tokenizer prompts are encoded with (may be None until a prompt must be encoded)."""

    @property
    def n_layers(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def model_name(self) -> str | None: ...

    kind: str
    """``"hooked"`` (TransformerLens) or ``"hf"`` (native Hugging Face): stored with vectors, whose
    ``ln1``/``ln2`` are read before the norm's gain on one and after it on the other."""

    @property
    def token_embedding(self) -> Tensor | None:
        """The token embedding matrix ``[d_vocab, d_model]``, or None when it holds no numbers (``meta``)."""
        ...

    @property
    def architecture(self) -> str | None:
        """The architecture as Hugging Face and llama.cpp name it (``"llama"``), None if unknown."""
        ...

    @property
    def device(self) -> torch.device: ...

    default_padding_side: str
    """Padding used when neither the caller nor the tokenizer says otherwise."""

    def check_tokenizer(self) -> None:
        """Raise ``TokenizerError`` unless prompts can be encoded for this model."""
        ...

    def encode(self, prompt: PromptInput, prepend_bos: bool | None = None) -> list[int]:
        """Token ids of ``prompt`` (text or ids) under the one tokenization policy (:class:`~steerlens.tokens.TokenPolicy`)."""
        ...

    @property
    def pad_id(self) -> int: ...

    def check_sites(self, sites: Sequence[Site]) -> None:
        """Raise (before any forward pass) unless every site can be read."""
        ...

    def read(
        self, batch: PromptBatch, sites: Sequence[Site], *, last_only: bool = False
    ) -> dict[Site, Float[Tensor, "batch pos d_model"]]:
        """Activations at ``sites`` for a padded batch, computing nothing after the deepest site's layer.

        With ``last_only`` only each row's last real token is needed: a backend may skip
        work elsewhere, and values at other positions are then undefined.
        """
        ...

    @property
    def can_continue(self) -> bool:
        """Whether :meth:`read_continuations` is available (the model runs a prefix into a KV cache)."""
        ...

    def read_continuations(
        self, prefix: Tensor, continuations: Sequence[PromptBatch], sites: Sequence[Site]
    ) -> list[dict[Site, Tensor]]:
        """:meth:`read` with ``last_only`` of ``prefix + continuation`` per row, for each continuation batch.

        ``prefix`` (``[batch, p]`` ids, no padding) runs once, into a KV cache; each right-padded
        continuation batch (same rows) runs on it. Values are read at each row's last real token.
        """
        ...

    def record(
        self, layer_type: str, layers: Sequence[int], clone: bool
    ) -> AbstractContextManager[dict[int, list[Tensor]]]:
        """Collect the activation at each layer on every forward pass inside the ``with`` block."""
        ...

    def check_vector(self, vectors: Mapping[int, Tensor], layer_type: str) -> None:
        """Raise ``ModelMismatchError`` (before any forward pass) unless the vectors can steer this model."""
        ...

    def apply(self, spec: SteeringSpec) -> AbstractContextManager[Any]:
        """Steer inside a ``with`` block; every hook is gone on exit, also on error."""
        ...

    def patch(self, spec: SteeringSpec) -> SteeringPatchHandle:
        """Steer until ``handle.remove()``."""
        ...

    def watch_passes(self, layer: int, callback: Callable[[PassPositions], None]) -> Any:
        """Call ``callback`` with each forward pass's positions before layer ``layer`` runs; returns a handle.

        Runs on every pass, also each KV-cache step of ``generate``, whatever arguments the
        model's library passes; ``handle.remove()`` stops it.
        """
        ...

    def steering_hooks(self) -> list[str]:
        """Where steerlens hooks are still installed (empty when the model is clean)."""
        ...

    def sweep_pass(self, batch: PromptBatch, layers: Sequence[int], layer_type: str, start: int = 0) -> SweepPass:
        """Start a sweep over ``layers`` on one batch (runs the clean pass).

        No cell steers a column before ``start``: a backend may run those once, into a KV cache.
        """
        ...

    def head(self, x: Tensor) -> Float[Tensor, "rows d_vocab"]:
        """Next-token logits from the head inputs a :class:`SweepPass` returns."""
        ...

    def generate(
        self, prompt: PromptInput, max_new_tokens: int, seed: int | None, prepend_bos: bool | None = None
    ) -> str:
        """Greedy (``seed=None``) or seeded sampled continuation of ``prompt``, without the prompt."""
        ...

    # -- what callers above backends/ ask of a model kind (instead of comparing ``kind`` or probing the model) --

    hooks_modules: bool
    """Whether steering hooks sit on named torch modules (``check_vector`` returns module sites with a
    ``path``), so another tool that hooks module outputs by name (lm-eval) can steer the same place."""

    @property
    def module_layout(self) -> HFLayout | None:
        """The model's decoder layers as module paths (``layers_path``), None where there are none or only a
        ``layer_config`` names them (a HookedTransformer names its layers by hook points)."""
        ...

    @property
    def context_length(self) -> int | None:
        """The most positions one sequence may have (prompt plus generated tokens), None if the model sets none."""
        ...

    def stored_layer_type(self, layer_type: str, layers: Sequence[int]) -> str:
        """The name a vector trained at ``layer_type`` on ``layers`` is stored, and read, under on this model."""
        ...
