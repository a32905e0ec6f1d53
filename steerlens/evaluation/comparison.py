"""Steered against unsteered next-token distributions, prompt by prompt.

:func:`compare_logits` reports, for each prompt × layer × multiplier, the KL
divergence, the change in log-probability of chosen tokens and the top-k tokens
before and after steering. :func:`ab_behavior_probability` scores multiple-choice
items in the format of contrastive activation addition (CAA): the probability
of the answer letter that matches the behaviour.

Every value is read at each prompt's last real token, with each layer of the
vector applied alone at every position, or groups of layers together
(``layers="joint"``, ``layers=[[2, 3], 4]``; see :func:`steerlens.sweep.iter_steered_logits`).
Target tokens and answer letters are encoded in the context of their prompt: the
token that really follows it (:mod:`steerlens.tokens.targets`), so a SentencePiece
``"A"`` after ``"("`` is ``A``, not ``▁A``.

Damage is always beside the effect: every row has ``kl``, and where the effect is
taken of named tokens (target tokens, answer letters) their total probability steered
and unsteered and a ``degenerate`` flag, True where that mass fell below
:data:`~steerlens.evaluation.metrics.DEGENERATE_FRACTION` (0.1) of its unsteered value:
there a share of the tokens can look decisive while the model says none of them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence, Union

import pandas as pd
import torch
from torch import Tensor
from typing_extensions import Unpack

from steerlens.checks import check_multipliers, token_id_list
from steerlens.errors import InvalidArgumentError, TargetTokenError
from steerlens.evaluation.metrics import (
    BoundMetric,
    CellReading,
    TokenGroup,
    argmax_changed,
    damage_warning,
    degenerate,
    group_logprob,
    kl_divergence,
    prob_mass,
    prob_share,
    token_ids,
)
from steerlens.evaluation.sweep import LogitsCell, steered_cells
from steerlens.samples.chat import answer_letter, caa_record
from steerlens.settings import STEERING, Run, SettingsKeywords, open_run
from steerlens.tokens import PromptInput, Prompts, check_prompt_inputs, single_target_id
from steerlens.tokens.policy import describe
from steerlens.vector import Layers, SteeringVector

Targets = Union[Sequence[Union[str, int]], Mapping[str, TokenGroup], None]


def _target_groups(tokenizer: Any, targets: Targets) -> dict[str, TokenGroup]:
    """Column name -> token group; a list names each target by its string (or decoded id)."""
    if targets is None:
        return {}
    if isinstance(targets, Mapping):
        return {str(name): group for name, group in targets.items()}
    items = [targets] if isinstance(targets, (str, int)) else list(targets)
    out: dict[str, TokenGroup] = {}
    for item in items:
        name = item if isinstance(item, str) else token_str(tokenizer, item)
        if name in out:
            raise InvalidArgumentError(f"target {name!r} is listed twice; use a dict to name targets yourself.")
        out[name] = item
    return out


def _target_ids(tokenizer: Any, targets: Targets, prompts: Sequence[Any]) -> list[dict[str, list[int]]]:
    """For each prompt, column name -> the target ids that follow that prompt (checked before any pass)."""
    groups = _target_groups(tokenizer, targets)
    return [{name: token_ids(tokenizer, group, prompt) for name, group in groups.items()} for prompt in prompts]


def token_str(tokenizer: Any, token_id: int) -> str:
    """A token's text; a partial UTF-8 byte (decoded as "\ufffd") gets its vocabulary entry instead."""
    text = tokenizer.decode([token_id])
    return str(tokenizer.convert_ids_to_tokens(token_id)) if "\ufffd" in text else text


def _top_k(tokenizer: Any, probs: Tensor, k: int) -> list[tuple[str, float]]:
    values, ids = probs.topk(k)
    return [(token_str(tokenizer, i), float(p)) for i, p in zip(ids.tolist(), values.tolist())]


RowsOf = Callable[[LogitsCell, CellReading], list[dict[str, Any]]]
"""A verb's rows for one cell (one per prompt of the cell, in ``cell.indices`` order), given its reading."""


def _open(model: Any, settings: SettingsKeywords, verb: str) -> Run:
    """A door's run (steering settings, 32 sequences per pass by default) with a tokenizer to read tokens by."""
    run = open_run(model, settings, verb, STEERING, batch_size=32)
    run.backend.check_tokenizer()
    return run


def _cell_table(
    run: Run,
    vector: SteeringVector,
    prompts: list[Any],
    layers: Layers,
    multipliers: list[float],
    *,
    reader: BoundMetric,
    rows_of: RowsOf,
) -> pd.DataFrame:
    """Every cell of the sweep read once by ``reader``, turned into rows by ``rows_of``, in prompt × layer ×
    multiplier order (layers and multipliers as the caller gave them)."""
    rows: dict[tuple[int, int, int], dict[str, Any]] = {}
    layer_pos: dict[Any, int] = {}
    for cell in steered_cells(run, vector, prompts, layers, multipliers):
        lp = layer_pos.setdefault(cell.layer, len(layer_pos))
        mp = multipliers.index(cell.multiplier)
        reading = reader.read(cell.steered, cell.unsteered, cell.indices)
        for index, row in zip(cell.indices, rows_of(cell, reading)):
            rows[(index, lp, mp)] = row
    return pd.DataFrame([rows[key] for key in sorted(rows)])


def _per_prompt(name: str, metrics: list[Any]) -> BoundMetric:
    """A reader whose metric differs by prompt (token ids already bound, one :class:`TokenMetric` per prompt)."""
    return BoundMetric(name, metrics[0], metrics)


def compare_logits(
    model: Any,
    vector: SteeringVector,
    prompts: Prompts,
    multipliers: float | Iterable[float] = (1.0,),
    layers: Layers = None,
    target_tokens: Targets = None,
    top_k: int = 5,
    **settings: Unpack[SettingsKeywords],
) -> pd.DataFrame:
    """Steered vs unsteered next-token distribution: one row per prompt × layer × multiplier.

    Columns: ``prompt_index, prompt, layer, multiplier``; ``kl`` = KL(steered ‖
    unsteered) in nats; ``argmax_changed`` (bool); ``top_k_before`` / ``top_k_after``
    = lists of ``(token_str, prob)``, most likely first. For each target ``<name>``:
    ``logprob_before[<name>]``, ``logprob_after[<name>]`` and ``delta_logprob[<name>]``
    (after − before, natural log). With targets, the damage beside them:
    ``target_mass`` and ``target_mass_unsteered`` = the total next-token probability
    of all targets together (each token once), steered and unsteered, and
    ``degenerate`` = ``target_mass < 0.1 * target_mass_unsteered``
    (:data:`~steerlens.evaluation.metrics.DEGENERATE_FRACTION`): the targets' log-odds
    there describe a model that no longer says any of them. One warning counts the
    degenerate rows (and says when the targets hold under 1% of the probability even
    unsteered).

    ``target_tokens`` is a list of token strings or ids (a target is named by its
    string, an id by its decoded text, see :func:`token_str`) or a dict ``name -> token or list of tokens``;
    a group's probability is the sum of its tokens' probabilities. Each string is the
    token that follows the prompt (encoded in context); a string that is several
    tokens there raises :class:`~steerlens.errors.TargetTokenError` (score such
    strings with :func:`~steerlens.evaluation.continuation.continuation_logprob`).
    ``layers=None`` takes each layer of ``vector`` separately; ``"joint"`` or groups
    (``[[2, 3], 4]``) steer layers together, labelled ``"2+3"``.

    ``settings``: :class:`~steerlens.settings.Settings` fields by name (``tokenizer``,
    ``batch_size`` (default 32), ``padding_side``, ``prepend_bos``, ``steer_from``,
    ``operator``, ``show_progress``) or ``settings=``, see :mod:`steerlens.settings`.
    Prompts are strings (chat templates too) or token ids, encoded with ``prepend_bos``
    (None: the model's default; see :class:`~steerlens.tokens.TokenPolicy`);
    ``steer_from``: where steering starts in each prompt (``"answer"``: from the
    assistant's turn, as in CAA; see :mod:`steerlens.tokens.starts`); ``show_progress``
    (default None): a bar of cells with the time left, shown once the call has run a few seconds.

    Example:
        >>> df = compare_logits(model, vec, ["I think the film was"], multipliers=[-4, 4],
        ...                     target_tokens={"positive": [" good", " great"], "negative": [" bad"]})
        >>> df[["multiplier", "kl", "delta_logprob[positive]"]]
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidArgumentError(f"top_k must be a positive int, got {top_k!r}.")
    run = _open(model, settings, "compare_logits")
    tok = run.backend.tokenizer
    prompt_list, mults = check_prompt_inputs(prompts), check_multipliers(multipliers)
    targets = _target_ids(tok, target_tokens, prompt_list)
    named = bool(targets and targets[0])
    reader = _targets_reader(targets) if named else _KL
    rows_of = _Comparison(tok, prompt_list, targets, top_k).rows
    frame = _cell_table(run, vector, prompt_list, layers, mults, reader=reader, rows_of=rows_of)
    if named:
        frame["degenerate"] = _flag_and_warn(frame, "target_mass", "target_mass_unsteered", "the target tokens")
    return frame


_KL = BoundMetric("kl", kl_divergence, None)
"""The reader of a cell without named tokens: its KL (and no mass)."""


def _targets_reader(targets: list[dict[str, list[int]]]) -> BoundMetric:
    """The reader of a cell with targets: its KL, and all targets together (each token once) as one mass.

    :func:`compare_logits` writes the reading's damage (``kl``, ``target_mass``); its effects are
    per target (log-probabilities), so the reading's ``effect`` (that mass again) is not a column.
    """
    every = [list(dict.fromkeys(i for ids in by_name.values() for i in ids)) for by_name in targets]
    return _per_prompt("target_mass", [prob_mass(ids) for ids in every])


def _flag_and_warn(frame: pd.DataFrame, steered: str, unsteered: str, tokens: str) -> Any:
    """The ``degenerate`` column of ``frame`` from its two mass columns; one warning if any row is degenerate."""
    flags = degenerate(torch.tensor(frame[steered].to_numpy()), torch.tensor(frame[unsteered].to_numpy())).numpy()
    message = damage_warning(int(flags.sum()), len(frame), float(frame[unsteered].mean()), "rows", tokens)
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return flags


@dataclass(frozen=True)
class _Comparison:
    """What :func:`compare_logits` writes beside a cell's reading: prompts, per-prompt target ids, top-k."""

    tokenizer: Any
    prompts: list[Any]
    targets: list[dict[str, list[int]]]
    top_k: int

    def rows(self, cell: LogitsCell, reading: CellReading) -> list[dict[str, Any]]:
        """One row per prompt of ``cell``: KL, argmax change, top-k before and after, targets' log-probs, mass."""
        lp_after, lp_before = torch.log_softmax(cell.steered, -1), torch.log_softmax(cell.unsteered, -1)
        changed = argmax_changed(cell.steered, cell.unsteered)
        k = min(self.top_k, cell.steered.shape[-1])
        out = []
        for row, index in enumerate(cell.indices):
            after, before = lp_after[row : row + 1], lp_before[row : row + 1]
            values: dict[str, Any] = {
                "prompt_index": index,
                "prompt": self.prompts[index],
                "layer": cell.layer,
                "multiplier": cell.multiplier,
                "kl": float(reading.kl[row]),
                "argmax_changed": bool(changed[row]),
                "top_k_before": _top_k(self.tokenizer, before[0].exp(), k),
                "top_k_after": _top_k(self.tokenizer, after[0].exp(), k),
            }
            for name, ids in self.targets[index].items():
                b, a = float(group_logprob(before, ids)[0]), float(group_logprob(after, ids)[0])
                values[f"logprob_before[{name}]"] = b
                values[f"logprob_after[{name}]"] = a
                values[f"delta_logprob[{name}]"] = a - b
            if reading.mass is not None:
                values["target_mass"] = float(reading.mass[row])
                values["target_mass_unsteered"] = float(reading.mass_unsteered[row])  # type: ignore[index]
            out.append(values)
        return out


# -- A/B behaviour items ------------------------------------------------------------

Letter = Literal["A", "B"]


@dataclass(frozen=True)
class ABItem:
    """A two-choice item: ``prompt`` ends right before the answer letter; ``matching`` is "A" or "B".

    ``matching`` is the letter of the answer that shows the behaviour being steered.

    Example:
        >>> ABItem.from_choices("Do you like cats?", "Yes, a lot", "Not at all", matching="A").prompt
        'Do you like cats?\\n\\nChoices:\\n(A) Yes, a lot\\n(B) Not at all\\nAnswer: ('
    """

    prompt: str | list[int]
    """Text (a chat-template string too) or token ids, which the model gets as they are."""
    matching: Letter

    def __post_init__(self) -> None:
        ids = None if isinstance(self.prompt, str) else token_id_list(self.prompt)
        if ids is not None:
            object.__setattr__(self, "prompt", ids)
        if not (isinstance(self.prompt, str) or ids is not None) or not self.prompt:
            raise InvalidArgumentError(
                f"an ABItem needs a non-empty prompt (a string or token ids), got {self.prompt!r:.80}."
            )
        if self.matching not in ("A", "B"):
            raise InvalidArgumentError(f"matching must be 'A' or 'B', got {self.matching!r}.")

    @classmethod
    def from_choices(cls, question: str, choice_a: str, choice_b: str, matching: Letter) -> "ABItem":
        """Build the prompt ``question / Choices: (A) .. (B) .. / Answer: (``."""
        return cls(f"{question}\n\nChoices:\n(A) {choice_a}\n(B) {choice_b}\nAnswer: (", matching)

    @classmethod
    def from_caa(cls, record: Mapping[str, str], template: str = "{question}\nAnswer: (") -> "ABItem":
        """From a CAA dataset record: ``question`` (choices included), ``answer_matching_behavior`` like "(A)"."""
        question, answer = caa_record(record, InvalidArgumentError)
        letter = answer_letter(answer)
        if letter is None:
            raise InvalidArgumentError(f"answer_matching_behavior must be '(A)' or '(B)', got {answer!r}.")
        return cls(template.format(question=question), letter)  # type: ignore[arg-type]


ItemLike = Union[ABItem, Mapping[str, str], tuple[str, str]]


def as_ab_items(items: Iterable[ItemLike]) -> list[ABItem]:
    """Items as :class:`ABItem` (from ABItems, CAA records or ``(prompt, letter)`` pairs)."""
    out = []
    for item in items:
        if isinstance(item, ABItem):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(ABItem.from_caa(item))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            out.append(ABItem(*item))
        else:
            raise InvalidArgumentError(
                f"an item must be an ABItem, a CAA dict or a (prompt, letter) pair, got {item!r}."
            )
    if not out:
        raise InvalidArgumentError("no items given; pass at least one ABItem.")
    return out


def ab_behavior_probability(
    model: Any,
    vector: SteeringVector,
    items: Iterable[ItemLike],
    multipliers: float | Iterable[float] = (-1.0, 1.0),
    layers: Layers = None,
    *,
    letters: tuple[str | int, str | int] = ("A", "B"),
    **settings: Unpack[SettingsKeywords],
) -> pd.DataFrame:
    """Normalised probability of the behaviour-matching answer letter, steered and unsteered.

    For each item × layer × multiplier: ``p_matching_* = P(matching) / (P(A) + P(B))``
    of the next token after the prompt, and ``ab_mass_* = P(A) + P(B)`` (low values
    mean the model is not answering with a letter). Damage beside the effect: ``kl`` =
    KL(steered ‖ unsteered) of the next-token distribution (nats), and ``degenerate`` =
    ``ab_mass_steered < 0.1 * ab_mass_unsteered``
    (:data:`~steerlens.evaluation.metrics.DEGENERATE_FRACTION`): steering has moved the
    model off the letters, and ``p_matching_steered`` is a ratio of two vanishing
    probabilities. One warning counts the degenerate rows (and says when the letters
    hold under 1% of the probability even unsteered). ``letters`` are the two letters
    (strings or token ids); each string is the token that really follows the item's
    prompt (on a SentencePiece tokenizer ``A`` after ``"("``, not ``▁A``), and a
    :class:`~steerlens.errors.TargetTokenError` names any letter that is not one
    token there. Items are :class:`ABItem`, CAA records (dicts) or ``(prompt,
    letter)`` pairs; prompts may be chat-template strings or token ids. ``layers`` as
    in :func:`compare_logits` (groups too).

    ``settings``: :class:`~steerlens.settings.Settings` fields by name (``tokenizer``,
    ``batch_size`` (default 32), ``padding_side``, ``prepend_bos``, ``steer_from``,
    ``operator``, ``show_progress``) or ``settings=``, see :mod:`steerlens.settings`.
    Prompts are encoded with ``prepend_bos`` (None: the model's default);
    ``steer_from="answer"`` steers from the assistant's turn on, as CAA does (default:
    every position; see :mod:`steerlens.tokens.starts`); ``show_progress`` (default
    None): a bar of cells with the time left, shown once the call has run a few seconds.

    Columns: ``item_index, prompt, matching, layer, multiplier, p_matching_unsteered,
    p_matching_steered, ab_mass_unsteered, ab_mass_steered, kl, degenerate``.

    Example:
        >>> df = ab_behavior_probability(model, vec, items, multipliers=[-2, 0, 2])
        >>> df.groupby(["layer", "multiplier"]).p_matching_steered.mean()
    """
    item_list = as_ab_items(items)
    run = _open(model, settings, "ab_behavior_probability")
    prompts = [item.prompt for item in item_list]
    letter_ids = [letter_pair(run.backend.tokenizer, prompt, letters) for prompt in prompts]
    mults = check_multipliers(multipliers)
    # p_matching is the share of the matching letter in the two letters' mass: prob_share(matching, other).
    shares = [prob_share(*(ids if item.matching == "A" else ids[::-1])) for item, ids in zip(item_list, letter_ids)]
    reader = _per_prompt("p_matching", shares)
    rows_of = partial(_ab_rows, item_list, reader)
    frame = _cell_table(run, vector, prompts, layers, mults, reader=reader, rows_of=rows_of)
    frame["degenerate"] = _flag_and_warn(frame, "ab_mass_steered", "ab_mass_unsteered", "the answer letters")
    return frame


def _ab_rows(items: list[ABItem], reader: BoundMetric, cell: LogitsCell, reading: CellReading) -> list[dict[str, Any]]:
    """One row per item of ``cell``: the matching letter's share and the letters' mass, unsteered and steered."""
    unsteered = reader.values(cell.unsteered, cell.unsteered, cell.indices)
    return [
        {
            "item_index": index,
            "prompt": items[index].prompt,
            "matching": items[index].matching,
            "layer": cell.layer,
            "multiplier": cell.multiplier,
            "p_matching_unsteered": float(unsteered[row]),
            "p_matching_steered": float(reading.effect[row]),
            "ab_mass_unsteered": float(reading.mass_unsteered[row]),  # type: ignore[index]
            "ab_mass_steered": float(reading.mass[row]),  # type: ignore[index]
            "kl": float(reading.kl[row]),
        }
        for row, index in enumerate(cell.indices)
    ]


def letter_pair(tokenizer: Any, prompt: PromptInput, letters: tuple[str | int, str | int]) -> list[int]:
    """The ids of the two letters right after ``prompt``; distinct, one token each."""
    if len(letters) != 2:
        raise InvalidArgumentError(f"letters must be two letters (strings or ids), got {letters!r}.")
    ids = [single_target_id(tokenizer, prompt, letter) for letter in letters]
    if ids[0] == ids[1]:
        raise TargetTokenError(
            f"letters {letters!r} are the same token after prompt {describe(prompt)}; pass two different letters."
        )
    return ids


def letter_probability(logits: Tensor, letter_ids: list[int], choice: int) -> tuple[float, float]:
    """(P(choice) / (P(A) + P(B)), P(A) + P(B)) from one row of next-token logits."""
    pair = logits[letter_ids].float()
    normalised = torch.softmax(pair, -1)[choice]
    mass = torch.softmax(logits.float(), -1)[letter_ids].sum()
    return float(normalised), float(mass)
