"""How a call runs: one frozen value, built once at each public door and passed down whole.

Every public verb (train, sweep, compare, calibrate, ...) reads prompts and runs the model
the same way, so it takes the same keywords for it: ``tokenizer``, ``batch_size``,
``padding_side``, ``prepend_bos``, ``steer_from``, ``operator``, ``show_progress`` and
``distributed`` (:class:`SettingsKeywords`). The door folds them into one :class:`Settings`
(on top of ``settings=``, a value built once and reused across calls), resolves the model's
backend once, and hands a :class:`Run` (backend + settings) to everything below it: no
internal function takes the keywords one by one, and none resolves the backend again.

Example:
    >>> fast = Settings(batch_size=64, prepend_bos=False)
    >>> sweep_layers(model, vec, prompts, settings=fast)               # the value as given
    >>> compare_logits(model, vec, prompts, settings=fast, batch_size=8)  # one field changed
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, TypedDict

from steerlens.backends import Backend, backend_for
from steerlens.checks import check_batch_size, check_padding_side
from steerlens.errors import InvalidArgumentError, UnknownKeywordError
from steerlens.hooks import Operator
from steerlens.tokens import PaddingSide, PreparedPrompts, Prompts, check_prepend_bos, prepare_prompts
from steerlens.tokens.starts import SteerFrom, steer_starts

__all__ = [
    "FIELDS",
    "PROMPT_READING",
    "READING",
    "STEERING",
    "Run",
    "Settings",
    "SettingsKeywords",
    "open_run",
    "settings_from",
]


@dataclass(frozen=True)
class Settings:
    """How prompts are read and the model is run; ``None`` means the model's (or the verb's) default.

    ``tokenizer`` overrides the model's own. ``batch_size`` is sequences per forward pass.
    ``padding_side`` and ``prepend_bos`` decide how prompts become token ids (``prepend_bos``
    has TransformerLens' meaning, see :class:`~steerlens.tokens.TokenPolicy`). ``steer_from``
    is where steering starts in each prompt (a position, one per prompt, ``"answer"`` or
    ``"last"``, see :mod:`steerlens.tokens.starts`); ``operator`` how the vector meets the
    activation (default: addition). ``show_progress``: a bar now (True), never (False) or once
    the call has run a few seconds (None). ``distributed``: each ``torch.distributed`` rank
    passes its own shard and gets the result of the whole set.

    Example:
        >>> Settings(batch_size=8).replace(prepend_bos=False)
        Settings(tokenizer=None, batch_size=8, padding_side=None, prepend_bos=False, ...)
    """

    tokenizer: Any = None
    batch_size: int | None = None
    padding_side: PaddingSide | None = None
    prepend_bos: bool | None = None
    steer_from: SteerFrom = None
    operator: Operator | None = None
    show_progress: bool | None = None
    distributed: bool = False

    def __post_init__(self) -> None:
        if self.batch_size is not None:
            check_batch_size(self.batch_size)
        if self.padding_side is not None:
            check_padding_side(self.padding_side)
        check_prepend_bos(self.prepend_bos)
        if self.operator is not None and not callable(self.operator):
            raise InvalidArgumentError(
                f"operator must be a function (activation, vector) -> delta, got {type(self.operator).__name__}."
            )
        for name in ("show_progress", "distributed"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise InvalidArgumentError(f"{name} must be True, False or None, got {value!r}.")

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (unknown names raise :class:`~steerlens.errors.UnknownKeywordError`)."""
        _check_names(changes, FIELDS, "Settings.replace")
        return replace(self, **changes)


FIELDS: frozenset[str] = frozenset(f.name for f in fields(Settings))
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Settings)}
"""Every setting: what a verb that trains, sweeps and gathers across ranks reads."""
READING: frozenset[str] = frozenset({"tokenizer", "batch_size", "padding_side", "prepend_bos", "show_progress"})
"""What a verb that only reads activations (no steering, one process) uses."""
STEERING: frozenset[str] = READING | {"steer_from", "operator"}
"""What a verb that steers prompts in one process uses."""
PROMPT_READING: frozenset[str] = READING - {"show_progress"}
"""What a verb that reads prompts in one process and shows no bar uses."""


class SettingsKeywords(TypedDict, total=False):
    """The keywords every public verb accepts for its :class:`Settings` (each field, or the whole value)."""

    settings: Settings
    tokenizer: Any
    batch_size: int
    padding_side: PaddingSide | None
    prepend_bos: bool | None
    steer_from: SteerFrom
    operator: Operator | None
    show_progress: bool | None
    distributed: bool


def settings_from(keywords: Mapping[str, Any], verb: str, uses: frozenset[str] = FIELDS, **defaults: Any) -> Settings:
    """The verb's settings: ``settings=`` (if given) changed by the other keywords, then ``defaults`` where unset.

    ``uses`` are the fields the verb reads: naming another one is an error (it would be silently
    ignored), while a shared ``settings=`` value may carry fields a verb does not use (they are reset
    to their defaults in the result). ``defaults`` fill fields still ``None`` (e.g. the verb's batch size).
    """
    keywords = dict(keywords)
    base = keywords.pop("settings", None)
    if base is None:
        base = Settings()
    elif not isinstance(base, Settings):
        raise InvalidArgumentError(
            f"{verb}(): settings must be a steerlens.Settings, got {type(base).__name__}; "
            "pass its fields by name instead (e.g. batch_size=8)."
        )
    _check_names(keywords, uses, f"{verb}()")
    # A shared value may carry fields this verb does not read: they go back to their defaults, so nothing
    # below the door can act on a setting the verb never accepted (e.g. a steering operator in a training read).
    ignored = {name: _DEFAULTS[name] for name in FIELDS - uses if getattr(base, name) is not _DEFAULTS[name]}
    settings = replace(base, **ignored, **keywords) if keywords or ignored else base
    unset = {name: value for name, value in defaults.items() if getattr(settings, name) is None}
    return replace(settings, **unset) if unset else settings


def folded(keywords: Mapping[str, Any], defaults: Mapping[str, Any], **parameters: Any) -> dict[str, Any]:
    """A door's ``**settings`` with the settings it also takes as parameters folded in (steering-vectors'
    positional ``tokenizer``, ``show_progress``, ``batch_size``; ``sweep_layers``' ``batch_size``).

    A parameter other than its default (``defaults``) wins over a ``settings=`` value's field; left at its
    default, the value's field is used if it sets one, else the default.

    Example:
        >>> folded({"settings": Settings(batch_size=8)}, {"batch_size": 32}, batch_size=32)
        {'settings': Settings(batch_size=8, ...)}
        >>> folded({"settings": Settings(batch_size=8)}, {"batch_size": 32}, batch_size=4)["batch_size"]
        4
    """
    changed = {name: value for name, value in parameters.items() if not _is_default(value, defaults[name])}
    return {**keywords, **changed}


def _is_default(value: Any, default: Any) -> bool:
    return value is default or (default is not None and type(value) is type(default) and value == default)


def _check_names(names: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise UnknownKeywordError(
            f"{where} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"it takes these settings: {', '.join(sorted(allowed))} (or settings=Settings(...))."
        )


@dataclass(frozen=True)
class Run:
    """One call's backend (resolved once) and settings: what every function below a door takes."""

    backend: Backend
    settings: Settings

    @classmethod
    def of(cls, model: Any, settings: Settings, layer_config: Any = None) -> Run:
        """``model``'s backend, resolved once (with the settings' tokenizer and a steering-vectors
        ``layer_config``), and ``settings``."""
        return cls(backend_for(model, settings.tokenizer, layer_config), settings)

    @property
    def batch_size(self) -> int:
        """Sequences per forward pass (the door filled in its default)."""
        assert self.settings.batch_size is not None, "the door sets a default batch size"
        return self.settings.batch_size

    def prepare(self, prompts: Prompts) -> PreparedPrompts:
        """``prompts`` checked and encoded under this run's ``prepend_bos`` and ``padding_side``."""
        return prepare_prompts(
            self.backend, prompts, prepend_bos=self.settings.prepend_bos, padding_side=self.settings.padding_side
        )

    def starts(self, encoded: list[list[int]]) -> list[int] | None:
        """Where steering starts in each encoded prompt (None: everywhere), from ``steer_from``."""
        return steer_starts(self.backend.tokenizer, encoded, self.settings.steer_from)

    def with_settings(self, **changes: Any) -> Run:
        """The same backend with some settings changed (e.g. a sub-step's batch size)."""
        return Run(self.backend, self.settings.replace(**changes))


def open_run(model: Any, keywords: Mapping[str, Any], verb: str, uses: frozenset[str] = FIELDS, **defaults: Any) -> Run:
    """A public door's one step: its settings (:func:`settings_from`) and the model's backend, resolved once.

    Example:
        >>> run = open_run(model, {"batch_size": 8}, "compare_logits", batch_size=32)
        >>> run.batch_size, run.backend.n_layers
        (8, 2)
    """
    return Run.of(model, settings_from(keywords, verb, uses, **defaults))
