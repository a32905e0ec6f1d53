"""The TransformerBridge backend: TransformerLens' wrapper of a Hugging Face model, by its hook names.

A ``TransformerBridge`` (TransformerLens 3.x and 4.x; on 4.x it replaces
``HookedTransformer``) runs the Hugging Face model's own layers and exposes
TransformerLens hook points on them, HookedTransformer names included as aliases
(``blocks.{L}.hook_resid_post`` is ``blocks.{L}.hook_out``). Reading, recording and
steering are the HookedTransformer backend's (``run_with_cache``, ``model.hooks``,
``add_hook``), so this backend subclasses :class:`~.hooked.HookedBackend` and changes
only what differs:

* Positions: the bridge's blocks are called with whatever the Hugging Face model
  passes, so passes are watched where every pass starts, a forward pre-hook on the
  wrapped model (``bridge.original_model``), read as the native HF backend reads it
  (:func:`~.hf.call_positions`: KV-cache length, ``position_ids``, attention mask).
  The bridge derives ``position_ids`` from a left-padded mask, also in ``generate``.
* Tokens follow TransformerLens' convention, as ``bridge.to_tokens`` does: a BOS iff
  ``bridge.cfg.default_prepend_bos`` (the bridge's tokenizer adds one whatever the
  original did), so text may encode with a BOS the HF route would not add; token ids
  are taken as they are on both routes.
* Generation: the bridge's attention reads the KV cache from ``past_key_values=``, which
  transformers 5.24 renamed ``cache=`` for decoder layers; there the bridge (TransformerLens
  3.9 and 4.3 alike) silently attends to the new token only, so :meth:`BridgeBackend.generate`
  runs without the cache (:data:`BRIDGE_KV_CACHE_OK`).
* Sweeps take the plain route (one steered forward per cell, logits from the model's
  own head): the bridge's ``start_at_layer`` still runs the earlier blocks, so resuming
  saves nothing.

``ln1``/``ln2`` are the bridge's ``hook_normalized`` (before the norm's gain, as on a
HookedTransformer), so vectors are stored with kind ``"hooked"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from steerlens.backends.hf import call_positions
from steerlens.backends.hooked import HookedBackend
from steerlens.backends.last_token import last_token_resid
from steerlens.backends.protocol import checkpoint_name, numeric_matrix
from steerlens.hooks import PassPositions, SteeringHook, SteeringSpec
from steerlens.tokens import PromptBatch


def _bridge_kv_cache_ok() -> bool:
    """Whether the installed transformers still passes decoder layers ``past_key_values=`` (before 5.24)."""
    import transformers

    major, minor = (int(part) for part in re.findall(r"\d+", transformers.__version__)[:2])
    return (major, minor) < (5, 24)


BRIDGE_KV_CACHE_OK: bool = _bridge_kv_cache_ok()
"""Whether a TransformerBridge's own KV cache gives the right tokens with the installed transformers."""


def is_transformer_bridge(model: Any) -> bool:
    """Whether ``model`` is a TransformerLens ``TransformerBridge`` (False where TransformerLens has none).

    Example:
        >>> is_transformer_bridge(TransformerBridge.boot_transformers("gpt2"))
        True
    """
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # pragma: no cover - a TransformerLens without the bridge
        return False
    return isinstance(model, TransformerBridge)


@dataclass
class BridgePassWatcher:
    """Forward pre-hook on the wrapped HF model: tells ``callback`` where each pass's columns sit.

    With ``alive`` it lives as long as a steering hook (``bridge.reset_hooks()`` removes
    hook-point hooks but knows nothing of torch pre-hooks): a watcher whose hook is gone
    removes itself.
    """

    callback: Callable[[PassPositions], None]
    alive: Callable[[], bool] = lambda: True
    handle: Any = None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not self.alive():
            self.handle.remove()
            return
        self.callback(call_positions(module, args, kwargs))


@dataclass
class BridgeBackend(HookedBackend):
    """A ``TransformerBridge`` and the tokenizer its prompts are encoded with.

    Example:
        >>> backend = BridgeBackend(bridge, bridge.tokenizer)
        >>> backend.n_layers, backend.kind
        (30, 'hooked')
    """

    use_kv_cache = BRIDGE_KV_CACHE_OK
    can_continue = False  # the bridge has no TransformerLens KV cache to run a prefix into: prompts are read whole

    def with_tokenizer(self, tokenizer: Any) -> "BridgeBackend":
        return BridgeBackend(self.model, tokenizer)

    @property
    def hf_model(self) -> nn.Module:
        """The Hugging Face model the bridge wraps (its layers are the bridge's blocks)."""
        return self.model.original_model

    # -- facts -----------------------------------------------------------------------

    @property
    def model_name(self) -> str | None:
        name = checkpoint_name(getattr(self.model.cfg, "model_name", ""))
        return name or self.architecture

    @property
    def architecture(self) -> str | None:
        # As the HF route names it, so a vector's fingerprint matches on both routes.
        return getattr(self.hf_model.config, "model_type", None) or None

    @property
    def token_embedding(self) -> Tensor | None:
        return numeric_matrix(getattr(self.hf_model.get_input_embeddings(), "weight", None))

    @property
    def device(self) -> torch.device:
        return self.hf_model.get_input_embeddings().weight.device

    # -- steering --------------------------------------------------------------------

    def watch_passes(
        self, layer: int, callback: Callable[[PassPositions], None], alive: Callable[[], bool] | None = None
    ) -> Any:
        """Call ``callback`` before every forward pass of the wrapped model (also each ``generate`` step).

        Every pass of the bridge starts at the wrapped HF model, so ``layer`` does not matter here.
        """
        watcher = BridgePassWatcher(callback, alive or (lambda: True))
        watcher.handle = self.hf_model.register_forward_pre_hook(watcher, with_kwargs=True, prepend=True)
        return watcher.handle

    def steering_hooks(self) -> list[str]:
        """Hook points holding a steerlens hook (by their HookedTransformer-style name), and the pass watcher."""
        names: list[str] = []
        seen: set[int] = set()
        hook_dict = self.model.hook_dict
        for name, point in hook_dict.items():
            if id(point) in seen or not any(isinstance(h.user_hook, SteeringHook) for h in point.fwd_hooks):
                continue
            seen.add(id(point))
            aliases = [n for n, p in hook_dict.items() if p is point and n != point.name]
            names.append(aliases[0] if aliases else name)
        watchers = [h for h in self.hf_model._forward_pre_hooks.values() if isinstance(h, BridgePassWatcher)]
        for watcher in watchers:
            if not watcher.alive():  # left behind by bridge.reset_hooks(): clean it up now
                watcher.handle.remove()
        if any(watcher.alive() for watcher in watchers):
            names.append("original_model")
        return names

    # -- evaluation ------------------------------------------------------------------

    @torch.no_grad()
    def last_token_logits(self, batch: PromptBatch) -> Tensor:
        """Next-token logits at each row's last real token, with whatever hooks are installed."""
        logits = self.model(batch.tokens, attention_mask=batch.attention_mask)
        return last_token_resid(logits, batch.last)

    def sweep_pass(
        self, batch: PromptBatch, layers: Sequence[int], layer_type: str, start: int = 0
    ) -> "BridgeSweepPass":
        return BridgeSweepPass(self, batch, self.last_token_logits(batch))

    def head(self, x: Tensor) -> Tensor:
        return x  # a sweep pass already returns logits, from the model's own head (soft-cap included)


@dataclass
class BridgeSweepPass:
    """The clean logits of one sweep batch; each steered cell is a full steered forward pass."""

    backend: BridgeBackend
    batch: PromptBatch
    clean: Tensor

    def steered(self, layer: int, specs: Sequence[SteeringSpec]) -> list[Tensor | None]:
        out: list[Tensor | None] = []
        for spec in specs:
            with self.backend.apply(spec):
                out.append(self.backend.last_token_logits(self.batch))
        return out
