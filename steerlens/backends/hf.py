"""The native Hugging Face backend: torch hooks on the model's own modules, no conversion.

Sites keep TransformerLens' names (``resid_post`` of layer L = output of decoder
layer L); :mod:`.hf_layout` finds the modules from the model's structure, so any
decoder-only architecture works and no second copy of the weights is made.

* Reading registers capture hooks at the requested sites and a stop hook on the
  deepest decoder layer, which ends the forward pass there (no unembedding). When
  only each row's last token is read (training), that layer's MLP runs at that token only.
* Steering hooks are registered with ``prepend=True``: they run before any hook
  transformers itself installs (``output_hidden_states`` capture), so
  ``hidden_states`` shows the steered values.
* Positions count per row from the first real token, as on a HookedTransformer: a
  forward pre-hook on the root model reads the KV-cache length, ``position_ids`` and
  the attention mask before each call (also each step of ``generate``).
* Each hook casts the vector to its own activation's device and dtype, so models
  spread over devices (``device_map``) steer as they are.
"""

from __future__ import annotations

import copy
import inspect
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from steerlens.backends.hf_layout import HFLayout, hf_layout, position_wise_mlp
from steerlens.backends.hf_layout import ModuleSite as HFSite
from steerlens.backends.last_token import last_token_resid
from steerlens.backends.layer_config import (
    ModelLayerConfig,
    configured_matcher,
    get_num_matching_layers,
    matcher_path,
)
from steerlens.backends.protocol import Site, checkpoint_name, numeric_matrix
from steerlens.errors import ModelMismatchError, TokenizerError, UnsupportedModelError
from steerlens.hooks import PassPositions, SteeringHook, SteeringPatchHandle, SteeringSpec, claim_steering
from steerlens.layers import check_layer_type
from steerlens.tokens import PromptBatch, PromptInput, TokenPolicy, pad_token_id


class _StopForward(Exception):
    """Raised by the stop hook once every requested site has been read."""


def site_tensor(site: HFSite, args: tuple, kwargs: dict, output: Any) -> Tensor:
    """The tensor ``site`` names in one module call: first input (or ``hidden_states=``), or first output."""
    if site.io == "input":
        return args[0] if args else kwargs["hidden_states"]
    return output[0] if isinstance(output, (tuple, list)) else output


def with_first(output: Any, tensor: Tensor) -> Any:
    """``output`` with its first tensor replaced by ``tensor``, in its container (OpenAI GPT's blocks return lists)."""
    if isinstance(output, list):
        return [tensor, *output[1:]]
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    return tensor


def call_positions(model: nn.Module, args: tuple, kwargs: dict) -> PassPositions:
    """Where the columns of one ``*ForCausalLM.forward`` call sit, from what every transformers version passes.

    The KV cache is found by what it is (an argument with ``get_seq_length``), whatever
    keyword it comes under (``past_key_values=`` up to transformers 5.24, ``cache=``
    since 5.25); ``position_ids`` and ``attention_mask`` are the forward's public inputs.
    """
    if len(args) > 1:  # inputs passed positionally: name them by the forward's own signature
        try:
            kwargs = {**inspect.signature(model.forward).bind_partial(*args, **kwargs).arguments, **kwargs}
        except TypeError:
            pass
    past = 0
    for value in (*args, *kwargs.values()):
        if hasattr(value, "get_seq_length"):
            past = int(value.get_seq_length())
            break
    else:
        start = kwargs.get("cache_position")
        if isinstance(start, Tensor) and start.numel():
            past = int(start.reshape(-1)[0])
    return PassPositions(past, kwargs.get("position_ids"), kwargs.get("attention_mask"))


@dataclass
class RootPassWatcher:
    """Forward pre-hook on the root model (not a block, as on a HookedTransformer): tells ``callback`` where each
    pass's columns sit."""

    callback: Callable[[PassPositions], None]

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.callback(call_positions(module, args, kwargs))


@dataclass
class LayerShape:
    """Forward pre-hook on a decoder layer: remembers ``[batch, pos, d_model]`` for flattened sites (OPT's MLP)."""

    store: dict[str, torch.Size]

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.store["shape"] = (args[0] if args else kwargs["hidden_states"]).shape


@dataclass
class HFSteer:
    """The torch hook steerlens puts on one HF module (recognisable by its type)."""

    hook: SteeringHook
    site: HFSite
    layer_shape: dict[str, torch.Size]

    def _steer(self, tensor: Tensor) -> Tensor:
        if not self.site.flattened:
            return self.hook(tensor)
        return self.hook(tensor.view(self.layer_shape["shape"])).view(tensor.shape)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output: Any = None) -> Any:
        tensor = self._steer(site_tensor(self.site, args, kwargs, output))
        if self.site.io == "input":
            if args:
                return (tensor, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": tensor}
        return with_first(output, tensor)


@dataclass
class _Capture:
    """Capture hook: hands a site's tensor, reshaped to ``[batch, pos, d_model]``, to ``keep``."""

    site: HFSite
    keep: Callable[[Tensor], None]
    layer_shape: dict[str, torch.Size]

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output: Any = None) -> None:
        value = site_tensor(self.site, args, kwargs, output)
        self.keep(value.view(self.layer_shape["shape"]) if self.site.flattened else value)


class _CacheGrab:
    """Forward pre-hook on a decoder layer: keeps the KV cache the model hands it (found by what it is)."""

    cache: Any = None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.cache = next((v for v in (*args, *kwargs.values()) if hasattr(v, "get_seq_length")), None)


def _stop(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
    raise _StopForward


class _MLPAtRows:
    """Run one MLP at a single position per row: the only one its output is read at.

    The pre-hook hands the MLP ``x[row, column]`` only; the hook puts the result back at
    those positions of a zero ``[batch, pos, d_model]`` tensor, so the layer's residual
    add and any position-wise norm after it see the shape they expect. Values at every
    other position of that layer's output are then meaningless: used for the deepest
    layer of a read that only keeps each row's last token. A call whose input is not
    one ``[batch, pos, d]`` tensor runs unchanged. An MLP that returns flattened
    ``[rows, d]`` (Llama 4's MoE) gets ``[batch * pos, d]`` back.
    """

    def __init__(self, columns: Tensor):
        self.columns = columns
        self.shape: torch.Size | None = None

    def before(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        x = args[0] if len(args) == 1 and not kwargs else None
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[0] != len(self.columns):
            self.shape = None
            return None
        self.shape = x.shape
        return (last_token_resid(x, self.columns).unsqueeze(1),), {}

    def after(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if self.shape is None:
            return None
        out = output[0] if isinstance(output, (tuple, list)) else output
        width = out.shape[-1]
        full = out.new_zeros(*self.shape[:2], width)
        rows = out.reshape(self.shape[0], width)  # [batch, 1, d], or [batch, d] from a flattening MLP
        full[torch.arange(self.shape[0], device=out.device), self.columns.to(out.device)] = rows
        return with_first(output, full if out.dim() == 3 else full.view(-1, width))


@dataclass
class HFBackend:
    """A Hugging Face ``PreTrainedModel`` and the tokenizer its prompts are encoded with."""

    model: Any
    tokenizer: Any
    layer_config: ModelLayerConfig | None = None
    # Right padding: HF models number positions 0..n-1 whatever the mask, so left
    # padding would shift every real token's position (we pass position_ids when asked for it).
    default_padding_side: str = field(default="right", init=False)
    kind = "hf"

    def with_tokenizer(self, tokenizer: Any) -> "HFBackend":
        return HFBackend(self.model, tokenizer, self.layer_config)

    # -- facts -----------------------------------------------------------------------

    @property
    def layout(self) -> HFLayout | None:
        """The model's layers as found from its module tree (None if only a layer_config can say)."""
        try:
            return hf_layout(self.model)
        except UnsupportedModelError:
            if not self.layer_config:
                raise
            return None

    @property
    def n_layers(self) -> int:
        block = configured_matcher(self.layer_config, "resid_post")
        if block is not None:
            return get_num_matching_layers(self.model, block)
        layout = self.layout
        if layout is not None:
            return layout.n_layers
        return max(get_num_matching_layers(self.model, m) for m in self.layer_config.values())  # type: ignore[union-attr]

    @property
    def d_model(self) -> int:
        hidden = getattr(self.model.config, "hidden_size", None)
        return int(hidden or self.model.get_input_embeddings().embedding_dim)

    @property
    def model_name(self) -> str | None:
        config = self.model.config
        name = checkpoint_name(getattr(config, "_name_or_path", ""))
        return name or getattr(config, "model_type", None)

    @property
    def architecture(self) -> str | None:
        return getattr(self.model.config, "model_type", None) or None

    @property
    def token_embedding(self) -> Tensor | None:
        return numeric_matrix(getattr(self.model.get_input_embeddings(), "weight", None))

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    # -- tokens ----------------------------------------------------------------------

    def check_tokenizer(self) -> None:
        if self.tokenizer is None:
            raise TokenizerError(
                "a Hugging Face model needs its tokenizer: pass tokenizer=AutoTokenizer.from_pretrained(...)."
            )
        vocab, rows = len(self.tokenizer), self.model.get_input_embeddings().num_embeddings
        if vocab > rows:
            raise TokenizerError(
                f"the tokenizer has {vocab} tokens but the model's embedding has {rows} rows; "
                "this tokenizer does not belong to this model. Pass the model's own tokenizer."
            )

    def encode(self, prompt: PromptInput, prepend_bos: bool | None = None) -> list[int]:
        """Input ids by the one policy (:class:`~steerlens.tokens.TokenPolicy`), BOS as the tokenizer adds it."""
        self.check_tokenizer()
        n_ctx = getattr(self.model.config, "max_position_embeddings", None)
        return TokenPolicy.for_tokenizer(self.tokenizer, n_ctx).encode(prompt, prepend_bos)

    @property
    def pad_id(self) -> int:
        return pad_token_id(self.tokenizer)

    def _forward_inputs(self, batch: PromptBatch) -> dict[str, Tensor]:
        inputs = {"input_ids": batch.tokens, "attention_mask": batch.attention_mask, "use_cache": False}
        if batch.padded.padding_side == "left" and "position_ids" in inspect.signature(self.model.forward).parameters:
            inputs["position_ids"] = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        return inputs

    # -- reading ---------------------------------------------------------------------

    def _site(self, layer: int, layer_type: str) -> HFSite:
        """Where ``layer_type`` of ``layer`` is: a layer_config match, else :meth:`HFLayout.named_site`
        (steering-vectors' names are the output of the layer's module of that name where it has one)."""
        matcher = configured_matcher(self.layer_config, layer_type)
        if matcher is not None:  # steering-vectors semantics: the matched module's output
            path = matcher_path(self.model, matcher, layer)
            return HFSite(path=path, io="output", steerable=True, layer_path=path)
        layout = self.layout
        if layout is None:
            raise UnsupportedModelError(
                f"layer_config has no entry for layer_type {layer_type!r} and steerlens cannot find this "
                f"{type(self.model).__name__}'s decoder layers by itself; add {layer_type!r} to layer_config."
            )
        return layout.named_site(layer, layer_type)

    def stored_layer_type(self, layer_type: str, layers: Sequence[int]) -> str:
        """The name a vector trained at ``layer_type`` on ``layers`` is stored under (see :meth:`HFLayout.stored_name`).

        With a layer_config entry for it, the canonical name, as before.
        """
        layout = self.layout
        if layout is None or configured_matcher(self.layer_config, layer_type) is not None:
            return check_layer_type(layer_type)
        return layout.stored_name(layer_type, layers)

    def _may_change_later(self, layer: int, site: HFSite) -> bool:
        """Whether the model may still change ``site``'s tensor in place after its hook has run.

        A decoder layer's input and output never are (transformers keeps them by reference
        in ``hidden_states``); a sublayer's output may be (Falcon adds the attention output
        into its MLP's output in place), so a read keeps a copy of those only.
        """
        layout = self.layout
        return layout is None or site.path != f"{layout.layers_path}.{layer}"

    def check_sites(self, sites: Sequence[Site]) -> None:
        for layer, layer_type in sites:
            self._site(layer, layer_type)

    def capture(self, key: Site, keep: Callable[[Tensor], None]) -> list[Any]:
        """Hand the ``[batch, pos, d_model]`` tensor at ``key`` to ``keep`` on every forward pass.

        The hook runs after any steering hook (those are prepended), so it sees steered
        values. Returns the handles to remove.
        """
        site = self._site(*key)
        handles = []
        shape: dict[str, torch.Size] = {}
        if site.flattened:
            layer_module = self.model.get_submodule(site.layer_path)
            handles.append(layer_module.register_forward_pre_hook(LayerShape(shape), with_kwargs=True))
        module = self.model.get_submodule(site.path)
        capture = _Capture(site, keep, shape)
        register = module.register_forward_pre_hook if site.io == "input" else module.register_forward_hook
        handles.append(register(capture, with_kwargs=True))
        return handles

    @torch.no_grad()
    def read(self, batch: PromptBatch, sites: Sequence[Site], *, last_only: bool = False) -> dict[Site, Tensor]:
        return self._read_pass(self._forward_inputs(batch), sites, batch.last if last_only else None)

    def _read_pass(self, inputs: dict[str, Any], sites: Sequence[Site], last: Tensor | None) -> dict[Site, Tensor]:
        """One forward pass on ``inputs`` keeping ``sites``, ended after the deepest site's layer.

        ``last`` (each row's read column) lets that layer's MLP run at those columns only.
        """
        store: dict[Site, Tensor] = {}
        handles = []
        try:
            for key in sites:
                clone = self._may_change_later(key[0], self._site(*key))
                handles += self.capture(
                    key, lambda t, key=key, clone=clone: store.__setitem__(key, t.clone() if clone else t)
                )
            if self.layout is not None:  # end the pass once the deepest layer has run
                top = max(layer for layer, _ in sites)
                deepest = self.model.get_submodule(self.layout.site(top, "resid_post").path)
                handles.append(deepest.register_forward_hook(_stop, with_kwargs=True))
                if last is not None and self._reads_only_resid_post(sites, top):
                    handles += self._mlp_at_columns(deepest, last)
            try:
                self.model(**inputs)
            except _StopForward:
                pass
        finally:
            for handle in handles:
                handle.remove()
        return store

    @property
    def can_continue(self) -> bool:
        """Whether :meth:`read_continuations` can run the prefix once (the forward takes a KV cache)."""
        return self.layout is not None and self._cache_keyword() is not None

    def _cache_keyword(self) -> str | None:
        # The forward's KV-cache argument: ``past_key_values`` up to transformers 5.24, ``cache`` since.
        parameters = inspect.signature(self.model.forward).parameters
        return next((name for name in ("cache", "past_key_values") if name in parameters), None)

    @torch.no_grad()
    def read_continuations(
        self, prefix: Tensor, continuations: Sequence[PromptBatch], sites: Sequence[Site]
    ) -> list[dict[Site, Tensor]]:
        """``sites`` at each continuation's last real token, the shared ``prefix`` run once.

        The prefix pass fills the model's own KV cache up to the deepest site's layer (the
        cache the model creates is picked up from that layer's call, whatever its class);
        each continuation then runs on a copy of it. No attention mask is needed: the
        prefix has no padding and continuations are right-padded, so no real token sees a pad.
        """
        keyword = self._cache_keyword()
        top = max(layer for layer, _ in sites)
        deepest = self.model.get_submodule(self.layout.site(top, "resid_post").path)  # type: ignore[union-attr]
        grab = _CacheGrab()
        handles = [
            deepest.register_forward_pre_hook(grab, with_kwargs=True),
            deepest.register_forward_hook(_stop, with_kwargs=True),
            # Only the deepest layer's keys and values are needed from the prefix, not its MLP.
            *self._mlp_at_columns(deepest, torch.zeros(prefix.shape[0], dtype=torch.long)),
        ]
        try:
            try:
                self.model(input_ids=prefix, use_cache=True)
            except _StopForward:
                pass
        finally:
            for handle in handles:
                handle.remove()
        if grab.cache is None or keyword is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} passed no KV cache to its layers; read the prompts whole instead."
            )
        out = []
        for k, batch in enumerate(continuations):
            cache = grab.cache if k == len(continuations) - 1 else copy.deepcopy(grab.cache)
            inputs = {"input_ids": batch.tokens, keyword: cache, "use_cache": True}
            out.append(self._read_pass(inputs, sites, batch.last))
        return out

    def _reads_only_resid_post(self, sites: Sequence[Site], top: int) -> bool:
        return configured_matcher(self.layer_config, "resid_post") is None and all(
            check_layer_type(layer_type) == "resid_post" for layer, layer_type in sites if layer == top
        )

    def _mlp_at_columns(self, layer_module: nn.Module, columns: Tensor) -> list[Any]:
        # Only one column of each row (its last real token) is read at the deepest layer,
        # so its MLP (most of a layer's compute) need not run anywhere else.
        mlp = position_wise_mlp(layer_module)
        if mlp is None:
            return []
        hooks = _MLPAtRows(columns)
        return [
            mlp.register_forward_pre_hook(hooks.before, with_kwargs=True),
            mlp.register_forward_hook(hooks.after, with_kwargs=True, prepend=True),
        ]

    @contextmanager
    def record(self, layer_type: str, layers: Sequence[int], clone: bool) -> Iterator[dict[int, list[Tensor]]]:
        records: dict[int, list[Tensor]] = defaultdict(list)

        def keeper(layer: int) -> Callable[[Tensor], None]:
            return lambda t: records[layer].append(t.clone().detach() if clone else t)

        handles: list[Any] = []
        try:
            for layer in layers:
                handles += self.capture((layer, layer_type), keeper(layer))
            yield records
        finally:
            for handle in handles:
                handle.remove()

    # -- steering --------------------------------------------------------------------

    def check_vector(self, vectors: Mapping[int, Tensor], layer_type: str) -> dict[int, HFSite]:
        d_model, n_layers = self.d_model, self.n_layers
        for layer, vec in vectors.items():
            if vec.shape[-1] != d_model:
                raise ModelMismatchError(
                    f"the vector has d_model {vec.shape[-1]} but the model's hidden size is {d_model}; "
                    "it was trained on another model. Train it on this model."
                )
            if layer >= n_layers:
                raise ModelMismatchError(
                    f"the vector steers layer {layer} but the model has only {n_layers} layers; "
                    "select the layers that exist with vec.select_layers([...])."
                )
        sites = {layer: self._site(layer, layer_type) for layer in vectors}
        for layer, site in sites.items():
            if not site.steerable:
                raise ModelMismatchError(
                    f"{layer_type} of layer {layer} is read only on this Hugging Face model: it is the {site.io} "
                    f"of {site.path}, but the layer keeps its own reference to the residual, so editing it would "
                    "change only what that module reads. It cannot be steered there; steer the HookedTransformer "
                    "from steerlens.load_model(hf_model) instead, or train at resid_pre/resid_post."
                )
        return sites

    def patch(self, spec: SteeringSpec) -> SteeringPatchHandle:
        sites = self.check_vector(spec.vectors, spec.layer_type)
        release = claim_steering(self.model)  # another thread steering this model: refused (hooks.threads)
        positions = PassPositions()
        handles = [self.watch_passes(0, positions.update)]
        try:
            for layer, vec in spec.vectors.items():
                site = sites[layer]
                shape: dict[str, torch.Size] = {}
                if site.flattened:
                    layer_module = self.model.get_submodule(site.layer_path)
                    handles.append(
                        layer_module.register_forward_pre_hook(LayerShape(shape), with_kwargs=True, prepend=True)
                    )
                steer = HFSteer(SteeringHook(vec, spec, positions), site, shape)
                handles.append(_register(self.model.get_submodule(site.path), site, steer))
        except BaseException:
            for handle in handles:
                handle.remove()
            release()
            raise

        def remove() -> None:
            try:
                for handle in handles:
                    handle.remove()
            finally:
                release()

        return SteeringPatchHandle(remove, handles)

    @contextmanager
    def apply(self, spec: SteeringSpec) -> Iterator[Any]:
        handle = self.patch(spec)
        try:
            yield self.model
        finally:
            handle.remove()

    def watch_passes(self, layer: int, callback: Callable[[PassPositions], None]) -> Any:
        """Call ``callback`` before every forward pass of the model (also each ``generate`` step); returns the handle.

        Any layer's pass starts at the root model, so ``layer`` does not matter here.
        """
        return self.model.register_forward_pre_hook(RootPassWatcher(callback), with_kwargs=True, prepend=True)

    def steering_hooks(self) -> list[str]:
        ours = (HFSteer, RootPassWatcher, LayerShape)
        return [
            name or "<root>"
            for name, module in self.model.named_modules()
            if any(isinstance(h, ours) for h in [*module._forward_hooks.values(), *module._forward_pre_hooks.values()])
        ]

    # -- evaluation ------------------------------------------------------------------

    def last_token_logits(self, batch: PromptBatch) -> Tensor:
        """Next-token logits at each row's last real token, with whatever hooks are installed.

        The LM head runs on those tokens only (a pre-hook hands it ``[batch, 1, d]``): on a
        large vocabulary it costs as much as several layers per position. Whatever the
        model does after the head (Gemma's soft-cap, Cohere's scale) still applies.
        """
        return self._logits_at(self._forward_inputs(batch), batch.last)

    @torch.no_grad()
    def _logits_at(self, inputs: dict[str, Any], last: Tensor) -> Tensor:
        """Logits of one forward pass on ``inputs`` at column ``last[row]`` of each row (the head runs there only)."""
        head = self._output_head()
        handle = None
        if isinstance(head, nn.Module):

            def at_last_tokens(module: nn.Module, args: tuple) -> Any:
                x = args[0] if args else None
                if isinstance(x, Tensor) and x.dim() == 3 and x.shape[0] == len(last):
                    return (last_token_resid(x, last).unsqueeze(1), *args[1:])
                return None

            handle = head.register_forward_pre_hook(at_last_tokens, prepend=True)
        try:
            logits = self._forward_logits(inputs)
        finally:
            if handle is not None:
                handle.remove()
        if logits.shape[1] == 1:
            return logits[:, 0]
        return last_token_resid(logits, last)  # a head that is not the output-embedding module

    def _output_head(self) -> Any:
        """The module whose input :meth:`_logits_at` cuts to the read tokens (None: cut the logits instead)."""
        return self.model.get_output_embeddings()

    def _forward_logits(self, inputs: dict[str, Any]) -> Tensor:
        return self.model(**inputs).logits

    def _prefix_cache(self, prefix: Tensor) -> Any:
        """The model's own KV cache after running ``prefix`` (``[batch, p]``, no padding) through every layer."""
        first = self.model.get_submodule(f"{self.layout.layers_path}.0")  # type: ignore[union-attr]
        grab = _CacheGrab()
        handle = first.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self._logits_at({"input_ids": prefix, "use_cache": True}, torch.zeros(len(prefix), dtype=torch.long))
        finally:
            handle.remove()
        return grab.cache

    def _sweep_rows(self, batch: PromptBatch, start: int) -> "SweepRows":
        """What a sweep runs on: the columns from ``start`` on after a cached prefix, when that is exact.

        Cells steer nothing before ``start``, so those columns are run once, into the KV cache.
        Needs right padding (columns are positions) and every row's last token after ``start``.
        """
        start = min(start, min(batch.padded.lengths) - 1)
        right = batch.padded.padding_side == "right" or len(set(batch.padded.lengths)) == 1
        keyword = self._cache_keyword() if self.layout is not None else None
        if start < 1 or not right or keyword is None:
            return SweepRows(batch)
        cache = self._prefix_cache(batch.tokens[:, :start])
        return SweepRows(batch) if cache is None else SweepRows(batch, start, cache, keyword)

    def sweep_pass(self, batch: PromptBatch, layers: Sequence[int], layer_type: str, start: int = 0) -> "HFSweepPass":
        replay = self._replay_layers(layers, layer_type)
        rows = self._sweep_rows(batch, start)
        outputs: dict[int, Any] = {}
        handles = []
        if replay:
            decoder = self.model.get_submodule(self.layout.layers_path)
            for layer in sorted(set(replay.values())):
                handles.append(
                    decoder[layer].register_forward_hook(
                        lambda module, args, output, layer=layer: outputs.__setitem__(layer, output)
                    )
                )
        try:
            clean = self._logits_at(rows.inputs(self), rows.last)
        finally:
            for handle in handles:
                handle.remove()
        return HFSweepPass(self, rows, clean, replay, outputs)

    def _replay_layers(self, layers: Sequence[int], layer_type: str) -> dict[int, int]:
        """For each sweep layer, the last decoder layer whose clean output a steered cell can reuse.

        Steering ``resid_post`` of layer L changes nothing before layer L's output, so
        layers 0..L replay their clean output; any other site sits inside (or at the input
        of) layer L, which must run, so 0..L-1 replay. Empty where the layout is unknown
        or a layer_config decides the sites: every cell then runs the whole model.
        """
        layout = self.layout
        if layout is None or configured_matcher(self.layer_config, layer_type) is not None:
            return {}
        replay = {}
        for layer in layers:
            at_output = self._site(layer, layer_type) == layout.site(layer, "resid_post")
            last = layer if at_output else layer - 1
            if last >= 0:
                replay[layer] = last
        return replay

    def head(self, x: Tensor) -> Tensor:
        return x  # a sweep pass already returns logits (HF heads may soft-cap or scale them)

    def generation_model(self) -> Any:
        """The module whose ``generate`` :meth:`generate` calls: the model itself."""
        return self.model

    def generate(
        self, prompt: PromptInput, max_new_tokens: int, seed: int | None, prepend_bos: bool | None = None
    ) -> str:
        runner = self.generation_model()
        ids = torch.tensor([self.encode(prompt, prepend_bos)], device=self.device)
        if seed is not None:
            torch.manual_seed(seed)
        out = runner.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=seed is not None,
            pad_token_id=self.pad_id,
        )
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    # -- what callers ask of a model kind (Backend protocol) ------------------------------

    hooks_modules = True  # torch hooks on module paths

    @property
    def module_layout(self) -> HFLayout | None:
        return self.layout

    @property
    def context_length(self) -> int | None:
        n_ctx = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return n_ctx if isinstance(n_ctx, int) else None


@dataclass(frozen=True)
class SweepRows:
    """The columns a sweep's forward passes run: all of them, or those from ``start`` on after a cached prefix."""

    batch: PromptBatch
    start: int = 0
    prefix: Any = None
    """The model's KV cache of columns ``< start`` (each pass runs on a copy: passes extend it)."""
    keyword: str = ""

    @property
    def last(self) -> Tensor:
        """Each row's last real token, as a column of the run."""
        return self.batch.last - self.start

    def inputs(self, backend: HFBackend) -> dict[str, Any]:
        if self.prefix is None:
            return backend._forward_inputs(self.batch)
        # Right padding: the mask covers cached and new columns, positions continue from the cache.
        return {
            "input_ids": self.batch.tokens[:, self.start :],
            "attention_mask": self.batch.attention_mask,
            self.keyword: copy.deepcopy(self.prefix),
            "use_cache": True,
        }


@dataclass
class HFSweepPass:
    """The clean logits of one sweep batch, and the decoder-layer outputs steered cells resume from.

    A cell steering layer L runs the model with layers 0..L (or 0..L-1) replaying their
    clean outputs instead of computing (their forward is swapped for one that returns the
    kept output; hooks on them still run), so only the layers after the steered site do
    work, and the LM head runs at each row's last token. The model's own forward does the
    rest (embeddings, masks, rotary tables, final norm, soft-cap), so nothing depends on
    how a given architecture wires its layers together.
    """

    backend: HFBackend
    rows: "SweepRows"
    clean: Tensor
    replay: dict[int, int]
    """Sweep layer -> the deepest decoder layer whose clean output a cell reuses."""
    outputs: dict[int, Any]
    """Decoder layer -> its clean output (whatever object the layer returned)."""

    def steered(self, layer: int, specs: Sequence[SteeringSpec]) -> list[Tensor | None]:
        out: list[Tensor | None] = []
        for spec in specs:
            with self.backend.apply(spec), self._resume(min(spec.vectors), max(spec.vectors)):
                out.append(self.backend._logits_at(self.rows.inputs(self.backend), self.rows.last))
        return out

    @contextmanager
    def _resume(self, layer: int, deepest: int) -> Iterator[None]:
        last = self.replay.get(layer)
        if last is None or last not in self.outputs:
            yield
            return
        backend = self.backend
        decoder = backend.model.get_submodule(backend.layout.layers_path)
        handles = []
        if deepest < len(decoder) - 1:  # nothing steers the final layer: its MLP runs at the read tokens only
            handles = backend._mlp_at_columns(decoder[len(decoder) - 1], self.rows.last)
        try:
            # Layers before the kept one return it too: the next layer only sees the kept one's.
            with replayed([decoder[i] for i in range(last + 1)], self.outputs[last]):
                yield
        finally:
            for handle in handles:
                handle.remove()


@contextmanager
def replayed(modules: Sequence[nn.Module], output: Any) -> Iterator[None]:
    """Each of ``modules`` returns ``output`` instead of computing (its hooks still run); restored afterwards.

    How a pass resumes from a kept layer output on any architecture: the model's own forward
    runs (embeddings, masks, rotary tables), the replayed layers just do no work.
    """
    saved = [module.__dict__.get("forward") for module in modules]
    try:
        for module in modules:
            module.forward = lambda *args, **kwargs: output
        yield
    finally:
        for module, forward in zip(modules, saved):
            if forward is None:
                del module.forward
            else:
                module.forward = forward


def _register(module: nn.Module, site: HFSite, hook: Any) -> Any:
    """Register ``hook`` on the input or output side of ``module``, ahead of every other hook."""
    if site.io == "input":
        return module.register_forward_pre_hook(hook, with_kwargs=True, prepend=True)
    return module.register_forward_hook(hook, with_kwargs=True, prepend=True)
