"""Threads: a model steered from one thread cannot be steered from another at the same time."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import make_model, random_vector
from tiny_hf import INPUT_IDS, make_hf_model

from steerlens.backends import steering_hooks_on
from steerlens.errors import SteeringThreadError


@pytest.fixture(scope="module", params=["hooked", "hf"])
def model(request):
    return make_model(n_layers=2) if request.param == "hooked" else make_hf_model("llama")


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        out = model(INPUT_IDS)
    return out if isinstance(out, torch.Tensor) else out.logits


def _in_thread(fn) -> BaseException | None:
    """Run ``fn`` in a real thread; what it raised (None if nothing)."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            caught.append(exc)

    thread = threading.Thread(target=run, name="second")
    thread.start()
    thread.join()
    return caught[0] if caught else None


@pytest.mark.parametrize("route", ["apply", "patch"])
def test_second_thread_is_refused_while_the_first_steers(model, route):
    a, b = random_vector(32, (0, 1), seed=1), random_vector(32, (0, 1), seed=2)
    pristine = _logits(model)
    with a.apply(model, multiplier=1.0):
        steered_a = _logits(model)

        def steer_b() -> None:
            if route == "apply":
                with b.apply(model):
                    pass
            else:
                b.patch(model).remove()

        error = _in_thread(steer_b)
        assert isinstance(error, SteeringThreadError)
        assert "one thread per model" in str(error) and "copy of the model" in str(error)
        # The refused thread installed nothing: the model is steered by a alone.
        assert torch.equal(_logits(model), steered_a)
    assert torch.equal(_logits(model), pristine)
    # Once the first thread is done, the other may steer.
    assert _in_thread(lambda: b.patch(model).remove()) is None
    assert steering_hooks_on(model) == []


def test_steering_in_both_threads_concurrently_is_refused_not_mixed(model):
    # Two threads repeatedly steering the same model: each block either runs with its own vector
    # only, or is refused; no thread ever sees the other's steering.
    vecs = [random_vector(32, (0, 1), seed=10 + i) for i in range(2)]
    expected = []
    for vec in vecs:
        with vec.apply(model):
            expected.append(_logits(model))
    wrong: list[int] = []
    refused = [0, 0]
    barrier = threading.Barrier(2)

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(15):
            try:
                with vecs[i].apply(model):
                    if not torch.equal(_logits(model), expected[i]):
                        wrong.append(i)
            except SteeringThreadError:
                refused[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert steering_hooks_on(model) == []


def test_nesting_in_one_thread_and_a_finished_threads_leftover_are_allowed(model):
    a, b = random_vector(32, (0,), seed=3), random_vector(32, (1,), seed=4)
    with a.apply(model), b.apply(model):  # one thread, nested: fine
        pass
    handles = []
    assert _in_thread(lambda: handles.append(a.patch(model))) is None  # that thread ends, its patch stays
    with b.apply(model):
        assert len(steering_hooks_on(model)) > 0
    handles[0].remove()  # a handle may be removed from any thread
    assert steering_hooks_on(model) == []


def test_reset_hooks_releases_the_claim_on_a_hooked_transformer():
    model = make_model(n_layers=2)
    random_vector(32, (0,), seed=5).patch(model)
    model.reset_hooks()  # TransformerLens' own idiom removes the hooks without the handle
    assert _in_thread(lambda: random_vector(32, (0,), seed=6).patch(model).remove()) is None
