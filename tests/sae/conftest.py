"""Real SAEs for the SAE tests, trained here with sae-lens' own trainer and cached between runs.

Activations are read with steerlens (real tokens, no BOS) and fed to sae-lens'
``SAETrainer`` (TopK SAE, activation norm estimated and folded by the trainer). The
trained SAE is saved with ``save_inference_model`` under
``~/.cache/steerlens/sae-fixtures/<name>-<hash of the config>`` (``STEERLENS_SAE_CACHE``
overrides the folder) and loaded from there on the next run; the training time is printed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")

CACHE = Path(os.environ.get("STEERLENS_SAE_CACHE", Path.home() / ".cache" / "steerlens" / "sae-fixtures"))
TOY_HOOK = "blocks.2.hook_resid_post"


def cached_sae(name: str, config: dict[str, Any], activations: Any) -> Any:
    """The SAE for ``config``: loaded from the cache, else trained on ``activations()`` and saved there."""
    from sae_lens import SAE, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    key = dict(config, sae_lens=sae_lens.__version__)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    folder = CACHE / f"{name}-{digest}"
    if (folder / "cfg.json").is_file():
        return SAE.load_from_disk(folder)
    start = time.perf_counter()
    acts = activations()
    read = time.perf_counter() - start
    torch.manual_seed(config["seed"])
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=acts.shape[1],
            d_sae=config["d_sae"],
            k=config["k"],
            normalize_activations="expected_average_only_in",
            dtype="float32",
            device="cpu",
        )
    )
    sae.cfg.metadata.hook_name = config["hook_name"]
    sae.cfg.metadata.model_name = config["model"]
    batch = config["batch"]

    def batches() -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(config["seed"])
        while True:
            order = torch.randperm(acts.shape[0], generator=generator)
            for begin in range(0, acts.shape[0] - batch + 1, batch):
                yield acts[order[begin : begin + batch]]

    trainer = SAETrainer(
        cfg=SAETrainerConfig(
            total_training_samples=config["steps"] * batch,
            train_batch_size_samples=batch,
            lr=config["lr"],
            lr_scheduler_name="constant",
            lr_end=config["lr"],
            device="cpu",
            n_checkpoints=0,
            checkpoint_path=None,
            logger=LoggingConfig(log_to_wandb=False),
            n_batches_for_norm_estimate=20,
            dead_feature_window=200,
            feature_sampling_window=500,
        ),
        sae=sae,
        data_provider=batches(),
    )
    trained = trainer.fit()
    folder.mkdir(parents=True, exist_ok=True)
    trained.save_inference_model(folder)
    print(
        f"\nSAE fixture {name}: {acts.shape[0]} activations read in {read:.1f}s, trained "
        f"{config['steps']} steps in {time.perf_counter() - start - read:.1f}s -> {folder}"
    )
    return SAE.load_from_disk(folder)


def toy_documents(n: int, seed: int) -> list[str]:
    from steerlens.toy.corpus import iter_documents

    return list(itertools.islice(iter_documents(seed), n))


def truncated_ids(tokenizer: Any, texts: list[str], n_tokens: int) -> list[list[int]]:
    """Each text's token ids (BOS first), cut to ``n_tokens``."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return [(bos + tokenizer.encode(t, add_special_tokens=False))[:n_tokens] for t in texts]


@pytest.fixture(scope="session")
def toy_model():
    from steerlens.toy import load_toy_model

    return load_toy_model()


@pytest.fixture(scope="session")
def toy_sae(toy_model):
    return toy_sae_for(toy_model)


def toy_sae_for(toy_model: Any) -> Any:
    """A TopK SAE (512 latents, k=16) on the toy model's ``blocks.2.hook_resid_post``, the sentiment vector's site."""
    from steerlens.sae import site_activations

    config = dict(
        model="steerlens-toy",
        hook_name=TOY_HOOK,
        d_sae=512,
        k=16,
        docs=1000,
        doc_seed=11,
        n_ctx=64,
        steps=600,
        batch=512,
        lr=1e-3,
        seed=0,
    )

    def activations() -> torch.Tensor:
        ids = truncated_ids(toy_model.tokenizer, toy_documents(config["docs"], config["doc_seed"]), config["n_ctx"])
        return site_activations(toy_model, TOY_HOOK, ids, batch_size=64)

    return cached_sae("toy-L2-resid_post", config, activations)


@pytest.fixture(scope="session")
def tiny_pair():
    """A tiny random Hugging Face llama and its HookedTransformer conversion."""
    from tiny_hf import make_hf_model, make_tokenizer

    from steerlens.adapter import convert_hf_model

    hf = make_hf_model("llama")
    return hf, convert_hf_model(hf, make_tokenizer()), make_tokenizer()


@pytest.fixture(scope="session")
def tiny_sae(tiny_pair):
    return tiny_sae_for(tiny_pair)


def tiny_sae_for(tiny_pair: Any) -> Any:
    """A TopK SAE (64 latents, k=4) on the tiny llama's ``blocks.1.hook_resid_post``, trained on random token text."""
    from steerlens.sae import site_activations

    hf, _, tokenizer = tiny_pair
    hook = "blocks.1.hook_resid_post"
    config = dict(
        model="tiny-llama-seed0",
        hook_name=hook,
        d_sae=64,
        k=4,
        prompts=400,
        length=24,
        steps=400,
        batch=256,
        lr=3e-3,
        seed=0,
    )

    def activations() -> torch.Tensor:
        rng = random.Random(config["seed"])
        prompts = [[1] + [rng.randrange(4, 22) for _ in range(config["length"])] for _ in range(config["prompts"])]
        return site_activations(hf, hook, prompts, tokenizer=tokenizer, batch_size=100)

    return cached_sae("tiny-llama-L1-resid_post", config, activations)


@pytest.fixture(scope="session")
def sentiment(toy_model):
    """The toy's sentiment vector at the SAE's site (layer 2, resid_post)."""
    from steerlens import train_steering_vector
    from steerlens.toy import sentiment_pairs

    return train_steering_vector(toy_model, None, sentiment_pairs("train"), layers=[2], layer_type="resid_post")


@pytest.fixture(scope="session")
def top_latent(toy_sae, sentiment):
    """``(latent, cosine)``: the sentiment vector's top latent by decoder cosine."""
    from steerlens.sae import decompose_vector

    row = decompose_vector(sentiment, toy_sae, top_k=5).iloc[0]  # geometry only: no prompts
    print(f"\nsentiment vector's top latent by cosine: {int(row.latent)} (cosine {row.cosine:.3f})")
    return int(row.latent), float(row.cosine)


SMOL_HOOK = "blocks.15.hook_resid_post"


@pytest.fixture(scope="session")
def smol():
    from steerlens import load_hf_model

    return load_hf_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smol_sae(smol):
    """A TopK SAE (512 latents, k=16) on SmolLM2-135M-Instruct's layer 15 residual, from the bundled chat data."""
    from steerlens.sae import site_activations
    from steerlens.samples import chat_contrast_pairs, neutral_chat_prompts

    model, tokenizer = smol
    config = dict(
        model="smollm2-135m-instruct",
        hook_name=SMOL_HOOK,
        d_sae=512,
        k=16,
        steps=300,
        batch=256,
        lr=1e-3,
        seed=0,
        data="chat sentiment+topic pairs (all), neutral chat prompts",
    )

    def activations() -> torch.Tensor:
        texts = [
            text
            for kind in ("sentiment", "topic")
            for pair in chat_contrast_pairs(kind, "all", tokenizer=tokenizer)
            for text in pair
        ]
        return site_activations(
            model, SMOL_HOOK, texts + neutral_chat_prompts(tokenizer), tokenizer=tokenizer, batch_size=32
        )

    return cached_sae("smollm2-L15-resid_post", config, activations)
