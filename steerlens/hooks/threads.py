"""Which threads steer a model: steering belongs to the model object, not to a thread.

What steerlens promises about threads: ``apply`` and ``patch`` install hooks on the model
itself, so while a model is steered *every* forward pass of it is steered, whichever thread
runs it. Two threads steering one model at once would each get the other's steering too, so
steerlens refuses it: a thread entering ``apply`` or ``patch`` on a model that another live
thread is steering raises :class:`~steerlens.errors.SteeringThreadError` before any hook is
installed. The fix is one thread per model, or a copy of the model per thread
(``copy.deepcopy(model)``), or a lock held around each steered block. Nesting in one thread
is fine (steerings add up), different models in different threads are independent, a
handle may be removed from any thread, and steering left behind by a finished thread (a
``patch`` never removed) does not block others. Not detectable: a thread that runs the model
*without* steering while another thread steers it; it is steered too.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from steerlens.errors import SteeringThreadError


@dataclass(frozen=True)
class _Claim:
    thread: threading.Thread
    installed: Callable[[], bool]
    """False once the steering's hooks are gone by other means (TransformerLens' ``reset_hooks``)."""


_LOCK = threading.Lock()
_CLAIMS: "weakref.WeakKeyDictionary[Any, dict[int, _Claim]]" = weakref.WeakKeyDictionary()
_TOKENS = itertools.count()


def claim_steering(model: Any, installed: Callable[[], bool] | None = None) -> Callable[[], None]:
    """Record that the current thread steers ``model``; returns the function that releases it.

    Raises :class:`SteeringThreadError` if another live thread steers ``model`` now.

    Example:
        >>> release = claim_steering(model)
        >>> ...  # install hooks
        >>> release()
    """
    me = threading.current_thread()
    with _LOCK:
        claims = _CLAIMS.setdefault(model, {})
        for token, claim in list(claims.items()):
            if not claim.thread.is_alive() or not claim.installed():
                del claims[token]  # a finished thread's leftover, or hooks removed behind our back
        others = {claim.thread.name for claim in claims.values() if claim.thread is not me}
        if others:
            raise SteeringThreadError(
                f"thread {me.name!r} tried to steer a {type(model).__name__} that thread {sorted(others)[0]!r} is "
                "steering: hooks belong to the model, so each thread would get the other's steering. Use one "
                "thread per model, or a copy of the model per thread (copy.deepcopy(model)), or hold a lock "
                "around each steered block."
            )
        token = next(_TOKENS)
        claims[token] = _Claim(me, installed or (lambda: True))

    def release() -> None:
        with _LOCK:
            held = _CLAIMS.get(model)
            if held is not None:
                held.pop(token, None)

    return release
