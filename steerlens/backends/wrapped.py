"""A torch module wrapping a Hugging Face model (PEFT/LoRA, a custom ``nn.Module``): steered as steering-vectors does.

steering-vectors accepts any ``nn.Module`` whose layers a ``layer_config`` names (or
that it can guess), and runs it by calling the module itself. :class:`WrappedBackend`
does the same: hooks go on the wrapper's own modules (``layer_config`` templates are
paths from the wrapper, e.g. ``"base.model.layers.{num}"``), every forward pass goes
through the wrapper's ``forward`` (whatever it adds, such as LoRA deltas, takes part),
and what only a Hugging Face model can say (hidden size, embeddings, context length,
its name, the KV-cache argument) comes from the Hugging Face model inside it. Without
a ``layer_config`` the decoder layers are found in the wrapper's module tree, as on a
plain Hugging Face model. A module with no Hugging Face model inside (a hand-written
transformer) needs a ``layer_config``; its hidden size is its first ``nn.Embedding``'s
(:class:`ModuleFacts`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import torch
from torch import Tensor, nn

from steerlens.backends.hf import HFBackend, RootPassWatcher
from steerlens.backends.hf_layout import HFLayout
from steerlens.backends.protocol import numeric_matrix
from steerlens.errors import TokenizerError, UnsupportedModelError
from steerlens.hooks import PassPositions
from steerlens.tokens import PromptBatch, PromptInput, TokenPolicy


def wrapped_hf_model(module: Any) -> Any:
    """The outermost Hugging Face ``PreTrainedModel`` inside ``module`` (not ``module`` itself), or None.

    Example:
        >>> wrapped_hf_model(peft_model) is peft_model.base_model.model
        True
    """
    from transformers import PreTrainedModel

    if not isinstance(module, nn.Module):
        return None
    return next((m for m in module.modules() if m is not module and isinstance(m, PreTrainedModel)), None)


@dataclass
class WrappedBackend(HFBackend):
    """A torch module holding a Hugging Face model (facts from that model), or any torch module with a
    ``layer_config`` (facts from its token embedding): hooks and forward passes on the module itself."""

    def with_tokenizer(self, tokenizer: Any) -> "WrappedBackend":
        return WrappedBackend(self.model, tokenizer, self.layer_config)

    @cached_property
    def hf_model(self) -> Any:
        """The Hugging Face model inside the wrapper (see :func:`wrapped_hf_model`), None if there is none."""
        return wrapped_hf_model(self.model)

    @property
    def _facts(self) -> "HFBackend | ModuleFacts":
        """What the model is and how it encodes: the inner Hugging Face model's, else the module's own."""
        hf = self.hf_model
        return HFBackend(hf, self.tokenizer) if hf is not None else ModuleFacts(self.model, self.tokenizer)

    @property
    def layout(self) -> HFLayout | None:
        """Decoder layers found in the wrapper's module tree; with no Hugging Face model inside, only
        ``layer_config`` says where layers are."""
        if self.hf_model is not None:
            return super().layout
        if not self.layer_config:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} holds no Hugging Face model, so steerlens cannot find its layers; "
                "pass layer_config={'decoder_block': '<path to the layers>.{num}'} as for steering-vectors."
            )
        return None

    # -- facts, from the model inside ------------------------------------------------------

    @property
    def d_model(self) -> int:
        return self._facts.d_model

    @property
    def model_name(self) -> str | None:
        return self._facts.model_name

    @property
    def architecture(self) -> str | None:
        return self._facts.architecture

    @property
    def token_embedding(self) -> Tensor | None:
        return self._facts.token_embedding

    @property
    def device(self) -> torch.device:
        return self._facts.device

    def check_tokenizer(self) -> None:
        self._facts.check_tokenizer()

    def encode(self, prompt: PromptInput, prepend_bos: bool | None = None) -> list[int]:
        return self._facts.encode(prompt, prepend_bos)

    # -- forward passes, through the wrapper --------------------------------------------------

    def _passes(self, name: str) -> bool:
        """Whether the wrapper's ``forward`` takes ``name`` (by name, or in ``**kwargs`` it hands on)."""
        parameters = inspect.signature(self.model.forward).parameters
        if name in parameters:
            return True
        if self.hf_model is None:
            return False
        inner = inspect.signature(self.hf_model.forward).parameters
        return name in inner and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    def _forward_inputs(self, batch: PromptBatch) -> dict[str, Tensor]:
        inputs = {"input_ids": batch.tokens, "attention_mask": batch.attention_mask, "use_cache": False}
        if not self._passes("use_cache"):
            del inputs["use_cache"]
        if batch.padded.padding_side == "left" and self._passes("position_ids"):
            inputs["position_ids"] = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        return inputs

    def _cache_keyword(self) -> str | None:
        if self.hf_model is None:
            return None
        keyword = HFBackend(self.hf_model, None)._cache_keyword()
        return keyword if keyword is not None and self._passes(keyword) and self._passes("use_cache") else None

    def _output_head(self) -> Any:
        return self.hf_model.get_output_embeddings() if self.hf_model is not None else None

    def _forward_logits(self, inputs: dict[str, Any]) -> Tensor:
        return _logits(self.model(**inputs))  # through the wrapper's own forward, whatever it returns

    def watch_passes(self, layer: int, callback: Callable[[PassPositions], None]) -> Any:
        """Call ``callback`` before every pass of the wrapper and of the model inside it; returns one handle.

        The inner model's call (later, so it wins) sees the KV cache and positions as the
        model gets them; it is also the one ``generate`` calls, bypassing the wrapper.
        """
        watcher = RootPassWatcher(callback)
        modules = [self.model] if self.hf_model is None else [self.model, self.hf_model]
        return _Handles([m.register_forward_pre_hook(watcher, with_kwargs=True, prepend=True) for m in modules])

    def generation_model(self) -> Any:
        """The wrapper where it has a ``generate`` (PEFT), else the inner model (same hooked modules)."""
        runner = self.model if callable(getattr(self.model, "generate", None)) else self.hf_model
        if runner is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} has no generate() and holds no Hugging Face model to generate with; "
                "steer it inside vec.apply(model) and run your own generation loop."
            )
        return runner


@dataclass
class ModuleFacts:
    """What a torch module with no Hugging Face model inside says about itself (steering-vectors needs no more).

    Its hidden size and token embedding are its first ``nn.Embedding``'s; there is no
    context limit, name or architecture to report.
    """

    model: nn.Module
    tokenizer: Any
    model_name = None
    architecture = None

    @property
    def embedding(self) -> nn.Embedding:
        found = next((m for m in self.model.modules() if isinstance(m, nn.Embedding)), None)
        if found is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} has no nn.Embedding, so its hidden size is unknown; steerlens steers "
                "token models (a Hugging Face model, or a module with a token embedding and a layer_config)."
            )
        return found

    @property
    def d_model(self) -> int:
        return self.embedding.embedding_dim

    @property
    def token_embedding(self) -> Tensor | None:
        return numeric_matrix(self.embedding.weight)

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def check_tokenizer(self) -> None:
        if self.tokenizer is None:
            raise TokenizerError(f"a {type(self.model).__name__} needs its tokenizer: pass tokenizer=...")
        vocab, rows = len(self.tokenizer), self.embedding.num_embeddings
        if vocab > rows:
            raise TokenizerError(
                f"the tokenizer has {vocab} tokens but the model's embedding has {rows} rows; pass the model's own."
            )

    def encode(self, prompt: PromptInput, prepend_bos: bool | None = None) -> list[int]:
        self.check_tokenizer()
        return TokenPolicy.for_tokenizer(self.tokenizer).encode(prompt, prepend_bos)


@dataclass
class _Handles:
    """Several torch hook handles removed as one (``remove`` is idempotent, as each handle's is)."""

    handles: list[Any]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _logits(output: Any) -> Tensor:
    """The logits in what a wrapper's forward returns: a model output, a tuple, or the tensor itself."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    return output[0]
