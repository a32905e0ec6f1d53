"""The TransformerLens backend: a ``HookedTransformer`` read with ``run_with_cache`` and
steered by hooks added with ``model.add_hook`` and removed by identity (one route for
``apply`` and ``patch``; see :meth:`HookedBackend.patch` and :mod:`steerlens.hooks.threads`).

A forward pre-hook on each steered block reads the KV-cache length and the attention
mask, so the steering hook knows each row's position of every column it sees (left
padding included), also while generating one token at a time. Sweeps resume from the cached clean residual at the steered layer
(``start_at_layer``) and run the final block for the last token only (:mod:`.tail`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from steerlens.backends.last_token import final_resid_at_last_token, last_token_resid, unembed
from steerlens.backends.protocol import Site, numeric_matrix
from steerlens.errors import ModelMismatchError, PromptTooLongError
from steerlens.hooks import PassPositions, SteeringHook, SteeringPatchHandle, SteeringSpec, claim_steering
from steerlens.layers import check_layer_type, hook_name
from steerlens.tl_speedup import kept_layouts
from steerlens.tokens import PromptBatch, PromptInput, TokenPolicy, check_tokenizer_fits, pad_token_id
from steerlens.tokens.turns import end_of_turn_ids

# Block at which a sweep resumes, relative to the steered layer.
_RESUME_OFFSET = {"resid_pre": 0, "resid_post": 1}


def block_positions(kwargs: dict) -> PassPositions:
    """Where the columns of one block call sit: its KV-cache entry and attention mask.

    The cache entry holds the keys of every earlier position; the mask TransformerLens
    hands each block covers cached and new tokens (it is how left padding is seen).
    """
    entry = kwargs.get("past_kv_cache_entry")
    past = 0 if entry is None else int(entry.past_keys.shape[1])
    return PassPositions(past, None, kwargs.get("attention_mask"))


def _holds(point: Any, hook: SteeringHook) -> bool:
    """Whether hook point ``point`` still runs ``hook`` (``model.reset_hooks()`` may have removed it)."""
    return any(lens.user_hook is hook for lens in point.fwd_hooks)


@dataclass
class PassWatcher:
    """Forward pre-hook on a block: tells ``callback`` where each pass's columns sit.

    A HookedTransformer's ``generate`` calls ``forward`` directly (no module hooks run
    on the model itself), so passes are watched at a block. With ``alive`` it lives as
    long as a steering hook: ``model.reset_hooks()`` (the usual TransformerLens idiom)
    removes steering hooks but knows nothing of torch pre-hooks, so a watcher whose
    hook is gone removes itself.
    """

    callback: Callable[[PassPositions], None]
    alive: Callable[[], bool] = lambda: True
    handle: Any = None

    def __call__(self, block: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if not self.alive():
            self.handle.remove()
            return
        self.callback(block_positions(kwargs))


@dataclass
class HookedBackend:
    """A ``HookedTransformer`` and the tokenizer its prompts are encoded with."""

    model: Any
    tokenizer: Any
    default_padding_side: str = field(init=False)
    layouts: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    """Rearranged weights shared by this backend's passes (:func:`steerlens.tl_speedup.kept_layouts`): one call's worth."""
    kind = "hooked"
    hooks_modules = False  # hook points by name, not module paths
    module_layout = None  # layers are hook points (Backend.module_layout)
    use_kv_cache = True  # whether generate() runs with TransformerLens' KV cache

    def __post_init__(self) -> None:
        self.default_padding_side = getattr(self.tokenizer, "padding_side", None) or "right"

    def with_tokenizer(self, tokenizer: Any) -> "HookedBackend":
        return HookedBackend(self.model, tokenizer)

    # -- facts -----------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.cfg.d_model)

    @property
    def model_name(self) -> str | None:
        return getattr(self.model.cfg, "model_name", None)

    @property
    def architecture(self) -> str | None:
        # A converted checkpoint remembers its HF class ("LlamaForCausalLM" -> "llama", "GPT2LMHeadModel" -> "gpt2").
        original = getattr(self.model.cfg, "original_architecture", None)
        if not original:
            return None
        return re.sub(r"(ForCausalLM|LMHeadModel)$", "", original).lower() or None

    @property
    def token_embedding(self) -> Tensor | None:
        return numeric_matrix(self.model.W_E)

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.cfg.device)

    # -- tokens ----------------------------------------------------------------------

    def check_tokenizer(self) -> None:
        check_tokenizer_fits(self.model, self.tokenizer)

    def encode(self, prompt: PromptInput, prepend_bos: bool | None = None) -> list[int]:
        """Input ids by the one policy (:class:`~steerlens.tokens.TokenPolicy`), BOS as TransformerLens adds it."""
        return TokenPolicy.for_hooked_transformer(self.model, self.tokenizer).encode(prompt, prepend_bos)

    @property
    def pad_id(self) -> int:
        return pad_token_id(self.tokenizer)

    # -- reading ---------------------------------------------------------------------

    def check_sites(self, sites: Sequence[Site]) -> None:
        for layer, layer_type in sites:
            name = hook_name(layer, layer_type)
            if name not in self.model.hook_dict:
                raise ModelMismatchError(
                    f"the model has no hook point {name!r}; this architecture does not expose "
                    f"layer_type {layer_type!r}. Choose another layer_type (e.g. 'resid_post')."
                )

    @torch.no_grad()
    def read(self, batch: PromptBatch, sites: Sequence[Site], *, last_only: bool = False) -> dict[Site, Tensor]:
        names = {site: hook_name(*site) for site in sites}
        with kept_layouts(self.layouts):
            _, cache = self.model.run_with_cache(
                batch.tokens,
                attention_mask=batch.attention_mask,
                names_filter=list(names.values()),
                stop_at_layer=max(layer for layer, _ in sites) + 1,
                return_cache_object=False,
            )
        return {site: cache[name] for site, name in names.items()}

    can_continue = True
    """:meth:`read_continuations` runs a shared prefix once (TransformerLens' own KV cache)."""

    @torch.no_grad()
    def read_continuations(
        self, prefix: Tensor, continuations: Sequence[PromptBatch], sites: Sequence[Site]
    ) -> list[dict[Site, Tensor]]:
        """``sites`` for each continuation of ``prefix`` (same rows), the prefix run once.

        The prefix (no padding) fills a TransformerLens KV cache up to the deepest site's
        layer, which is then frozen: every continuation attends to it without extending it.
        """
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        names = {site: hook_name(*site) for site in sites}
        stop = max(layer for layer, _ in sites) + 1
        cache = TransformerLensKeyValueCache.init_cache(self.model.cfg, self.model.cfg.device, prefix.shape[0])
        out = []
        with kept_layouts(self.layouts):
            self.model(prefix, attention_mask=torch.ones_like(prefix), past_kv_cache=cache, stop_at_layer=stop)
            cache.freeze()
            for batch in continuations:
                _, acts = self.model.run_with_cache(
                    batch.tokens,
                    attention_mask=batch.attention_mask,
                    past_kv_cache=cache,
                    names_filter=list(names.values()),
                    stop_at_layer=stop,
                    return_cache_object=False,
                )
                out.append({site: acts[name] for site, name in names.items()})
        return out

    @contextmanager
    def record(self, layer_type: str, layers: Sequence[int], clone: bool) -> Iterator[dict[int, list[Tensor]]]:
        records: dict[int, list[Tensor]] = defaultdict(list)

        def keeper(layer: int) -> Any:
            def keep(act: Tensor, hook: Any) -> None:
                records[layer].append(act.clone().detach() if clone else act)

            return keep

        self.check_sites([(layer, layer_type) for layer in layers])
        with self.model.hooks(fwd_hooks=[(hook_name(layer, layer_type), keeper(layer)) for layer in layers]):
            yield records

    # -- steering --------------------------------------------------------------------

    def check_vector(self, vectors: Mapping[int, Tensor], layer_type: str) -> None:
        cfg = self.model.cfg
        for layer, vec in vectors.items():
            if vec.shape[-1] != cfg.d_model:
                raise ModelMismatchError(
                    f"the vector has d_model {vec.shape[-1]} but the model has {cfg.d_model}; "
                    "it was trained on another model. Train it on this model."
                )
            if layer >= cfg.n_layers:
                raise ModelMismatchError(
                    f"the vector steers layer {layer} but the model has only {cfg.n_layers} layers; "
                    "select the layers that exist with vec.select_layers([...])."
                )
            name = hook_name(layer, layer_type)
            if name not in self.model.hook_dict:
                raise ModelMismatchError(
                    f"the model has no hook point {name!r}; it cannot be steered at layer_type "
                    f"{layer_type!r}. Train a vector at another layer_type (e.g. 'resid_post')."
                )

    def _hooks(self, spec: SteeringSpec) -> list[tuple[str, SteeringHook]]:
        """The named steering hooks of ``spec``."""
        self.check_vector(spec.vectors, spec.layer_type)
        return [(hook_name(layer, spec.layer_type), SteeringHook(vec, spec)) for layer, vec in spec.vectors.items()]

    def watch_passes(
        self, layer: int, callback: Callable[[PassPositions], None], alive: Callable[[], bool] | None = None
    ) -> Any:
        """Call ``callback`` before block ``layer`` runs in every forward pass (also each ``generate`` step)."""
        watcher = PassWatcher(callback, alive or (lambda: True))
        watcher.handle = self.model.blocks[layer].register_forward_pre_hook(watcher, with_kwargs=True, prepend=True)
        return watcher.handle

    def _track(self, hooks: list[tuple[str, SteeringHook]]) -> list[Any]:
        """A pass watcher on the block of each installed steering hook; returns their handles."""
        handles = []
        for name, hook in hooks:
            point = self.model.hook_dict[name]
            alive = lambda point=point, hook=hook: _holds(point, hook)  # noqa: E731
            handles.append(self.watch_passes(int(name.split(".")[1]), hook.positions.update, alive))
        return handles

    @contextmanager
    def apply(self, spec: SteeringSpec) -> Iterator[Any]:
        """:meth:`patch` for the ``with`` block: blocks may be exited in any order, each removes its own hooks."""
        handle = self.patch(spec)
        try:
            yield self.model
        finally:
            handle.remove()

    def patch(self, spec: SteeringSpec) -> SteeringPatchHandle:
        """The one way steering hooks go on and off this model: added and removed by identity.

        Not ``model.hooks(...)``: TransformerLens removes those by nesting level, so blocks
        exited out of order (enter a, enter b, exit a) would take off b's hooks and leave a's.
        """
        hooks = self._hooks(spec)
        points = [(self.model.hook_dict[name], hook) for name, hook in hooks]
        release = claim_steering(self.model, lambda: any(_holds(point, hook) for point, hook in points))
        trackers: list[Any] = []

        def remove() -> None:
            try:
                for handle in trackers:
                    handle.remove()
                for point, hook in points:
                    # Exactly our LensHandle, so hooks added by anyone else stay in place.
                    for lens in [h for h in point.fwd_hooks if h.user_hook is hook]:
                        lens.hook.remove()
                        point.fwd_hooks.remove(lens)
            finally:
                release()

        try:
            for name, hook in hooks:
                self.model.add_hook(name, hook)
            trackers += self._track(hooks)
        except BaseException:
            remove()
            raise
        return SteeringPatchHandle(remove, [*_torch_handles(self.model, hooks), *trackers])

    def steering_hooks(self) -> list[str]:
        names = [
            name
            for name, point in self.model.hook_dict.items()
            if any(isinstance(h.user_hook, SteeringHook) for h in point.fwd_hooks)
        ]
        for i, block in enumerate(self.model.blocks):
            watchers = [h for h in block._forward_pre_hooks.values() if isinstance(h, PassWatcher)]
            for watcher in watchers:
                if not watcher.alive():  # left behind by model.reset_hooks(): clean it up now
                    watcher.handle.remove()
            if any(watcher.alive() for watcher in watchers):
                names.append(f"blocks.{i}")
        return names

    # -- evaluation ------------------------------------------------------------------

    def sweep_pass(
        self, batch: PromptBatch, layers: Sequence[int], layer_type: str, start: int = 0
    ) -> "HookedSweepPass":
        cfg = self.model.cfg
        fast = (
            layer_type in _RESUME_OFFSET
            and cfg.positional_embedding_type != "shortformer"
            and getattr(cfg, "n_devices", 1) == 1
        )
        names = [hook_name(layer, layer_type) for layer in layers] if fast else []
        with torch.no_grad(), kept_layouts(self.layouts):
            final, cache = self.model.run_with_cache(
                batch.tokens,
                attention_mask=batch.attention_mask,
                names_filter=names,
                stop_at_layer=cfg.n_layers,
                return_cache_object=False,
            )
        return HookedSweepPass(self, batch, layer_type, fast, last_token_resid(final, batch.last), cache)

    def head(self, x: Tensor) -> Tensor:
        with kept_layouts(self.layouts):
            return unembed(self.model, x)

    @property
    def context_length(self) -> int | None:
        n_ctx = getattr(self.model.cfg, "n_ctx", None)  # a TransformerBridge's config may set none
        return n_ctx if isinstance(n_ctx, int) else None

    def stored_layer_type(self, layer_type: str, layers: Sequence[int]) -> str:
        return check_layer_type(layer_type)

    def generate(
        self, prompt: PromptInput, max_new_tokens: int, seed: int | None, prepend_bos: bool | None = None
    ) -> str:
        tokens = torch.tensor([self.encode(prompt, prepend_bos)], device=self.device)
        room = self.model.cfg.n_ctx - tokens.shape[1]
        if max_new_tokens > room:  # past n_ctx TransformerLens fails deep in its position embedding
            raise PromptTooLongError(
                f"max_new_tokens={max_new_tokens} does not fit: the prompt takes {tokens.shape[1]} of the model's "
                f"{self.model.cfg.n_ctx}-token context; use max_new_tokens={max(room, 0)} or less, or a shorter prompt."
            )
        if seed is not None:
            torch.manual_seed(seed)
        out = self.model.generate(
            tokens,
            max_new_tokens=max_new_tokens,
            do_sample=seed is not None,
            verbose=False,
            stop_at_eos=True,
            eos_token_id=end_of_turn_ids(self.tokenizer) or None,  # also a chat template's own end of turn
            use_past_kv_cache=self.use_kv_cache,
        )
        # As the Hugging Face route decodes: without special tokens (a chat model's <|im_end|>).
        return self.tokenizer.decode(out[0, tokens.shape[1] :], skip_special_tokens=True)


@dataclass
class HookedSweepPass:
    """The clean pass of one sweep batch; each steered cell resumes from its cached residual."""

    backend: HookedBackend
    batch: PromptBatch
    layer_type: str
    fast: bool
    clean: Float[Tensor, "batch d_model"]
    cache: dict[str, Tensor]

    @torch.no_grad()
    def steered(self, layer: int, specs: Sequence[SteeringSpec]) -> list[Tensor | None]:
        with kept_layouts(self.backend.layouts):
            return self._steered(layer, specs)

    def _steered(self, layer: int, specs: Sequence[SteeringSpec]) -> list[Tensor | None]:
        if not self.fast:
            return [self._full_forward(spec) for spec in specs]
        act = self.cache[hook_name(layer, self.layer_type)]
        positions = PassPositions(attention_mask=self.batch.attention_mask)
        steered_acts = [SteeringHook(spec.vectors[layer], spec).steer(act, positions) for spec in specs]
        # A cell whose activation is exactly unchanged (m = 0 with addition) is the clean one.
        moved = [i for i, s in enumerate(steered_acts) if not torch.equal(s, act)]
        out: list[Tensor | None] = [None] * len(specs)
        if moved:
            n, batch = len(moved), self.batch
            resid = final_resid_at_last_token(
                self.backend.model,
                torch.cat([steered_acts[i] for i in moved]),
                layer + _RESUME_OFFSET[self.layer_type],
                batch.last.repeat(n),
                batch.attention_mask.repeat(n, 1),
            )
            for i, chunk in zip(moved, resid.split(act.shape[0])):
                out[i] = chunk
        return out

    def _full_forward(self, spec: SteeringSpec) -> Tensor:
        """The plain route: steer and run the whole model."""
        model, batch = self.backend.model, self.batch
        with self.backend.apply(spec):
            final = model(batch.tokens, attention_mask=batch.attention_mask, stop_at_layer=model.cfg.n_layers)
        return last_token_resid(final, batch.last)


class HookPointHandle(RemovableHandle):
    """The torch handle of one steering hook on a TransformerLens hook point (``handle.model_hooks``).

    Removing it also drops the hook point's record of the hook, as TransformerLens' own
    removal does, so nothing reports the model as still steered.
    """

    def __init__(self, point: Any, lens: Any) -> None:
        self.__dict__.update(vars(lens.hook))  # the same hook id and hook-dict references
        self.point, self.lens = point, lens

    def remove(self) -> None:
        super().remove()
        self.point.fwd_hooks[:] = [h for h in self.point.fwd_hooks if h is not self.lens]


def _torch_handles(model: Any, hooks: list[tuple[str, SteeringHook]]) -> list[HookPointHandle]:
    """A :class:`HookPointHandle` for each of ``hooks`` on its TransformerLens hook point."""
    return [
        HookPointHandle(model.hook_dict[name], lens)
        for name, hook in hooks
        for lens in model.hook_dict[name].fwd_hooks
        if lens.user_hook is hook
    ]
