"""train_steering_vector(distributed=True) on 2 Gloo processes equals one process on all pairs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import PAIRS, make_model, run_gloo_ranks

from steerlens import SteeringVector, logistic_aggregator, pca_aggregator, sweep_layers, train_steering_vector
from steerlens.errors import InvalidArgumentError

TESTS = Path(__file__).resolve().parents[1]  # tests/, where helpers.py lives
PROMPTS = ["I love this film", "The food was", "What a day", "She said it was", "We ate pasta in"]
WORKER = """
import sys, torch, torch.distributed as dist
sys.path[:0] = [{tests!r}, {root!r}]
from helpers import PAIRS, make_model
from steerlens import logistic_aggregator, pca_aggregator, sweep_layers, train_steering_vector
PROMPTS = {prompts!r}
dist.init_process_group("gloo")
rank = dist.get_rank()
shard = PAIRS[:4] if rank == 0 else PAIRS[4:]  # uneven shards, in rank order
model = make_model()
aggregators = {{"mean": None, "pca": pca_aggregator(), "logistic": logistic_aggregator(sklearn_kwargs={{"C": 10.0}})}}
for name, aggregator in aggregators.items():
    vec = train_steering_vector(model, None, shard, layers=[1, 3], batch_size=3, distributed=True,
                                **({{}} if aggregator is None else {{"aggregator": aggregator}}))
    vec.save(f"{{sys.argv[1]}}/{{name}}-{{rank}}.safetensors")
prompts = PROMPTS[:3] if rank == 0 else PROMPTS[3:]
for per_prompt in (True, False):
    frame = sweep_layers(model, shard, prompts, layers=[1, [2, 3]], multipliers=[-2.0, 2.0], batch_size=4,
                         per_prompt=per_prompt, distributed=True)
    frame.to_csv(f"{{sys.argv[1]}}/sweep-{{per_prompt}}-{{rank}}.csv", index=False)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_vector(tmp_path):
    run_gloo_ranks(WORKER.format(tests=str(TESTS), root=str(TESTS.parent), prompts=PROMPTS), tmp_path)
    model = make_model()
    for name, aggregator in {
        "mean": None,
        "pca": pca_aggregator(),
        "logistic": logistic_aggregator(sklearn_kwargs={"C": 10.0}),
    }.items():
        kwargs = {} if aggregator is None else {"aggregator": aggregator}
        single = train_steering_vector(model, None, PAIRS, layers=[1, 3], batch_size=3, **kwargs)
        for rank in (0, 1):
            got = SteeringVector.load(tmp_path / f"{name}-{rank}.safetensors")
            assert got.metadata["training"]["n_samples"] == len(PAIRS)
            for layer in (1, 3):
                torch.testing.assert_close(
                    got.layer_activations[layer],
                    single.layer_activations[layer],
                    atol=1e-6,
                    rtol=0,
                    msg=f"{name} rank {rank} layer {layer}",
                )
    for per_prompt in (True, False):
        single = sweep_layers(
            model, PAIRS, PROMPTS, layers=[1, [2, 3]], multipliers=[-2.0, 2.0], batch_size=4, per_prompt=per_prompt
        )
        for rank in (0, 1):
            got = pd.read_csv(tmp_path / f"sweep-{per_prompt}-{rank}.csv")
            assert list(got.columns) == list(single.columns) and len(got) == len(single)
            assert got["layer"].astype(str).tolist() == single["layer"].astype(str).tolist()
            for column in single.columns:
                if column in ("layer", "prompt"):
                    continue
                assert got[column].to_numpy() == pytest.approx(single[column].to_numpy(), abs=1e-6), column
            if per_prompt:
                assert got["prompt"].tolist() == single["prompt"].tolist()


def test_distributed_without_a_process_group_is_a_clear_error(model, pairs):
    with pytest.raises(InvalidArgumentError, match="init_process_group"):
        train_steering_vector(model, None, pairs, distributed=True)
