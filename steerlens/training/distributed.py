"""Work split over processes with ``torch.distributed``: each rank reads its own shard.

Users who outgrow one device launch one process per device (``torchrun``; NCCL on
GPUs, Gloo on CPU), give each rank its own slice of pairs or prompts, and pass
``distributed=True``: every rank then gets the result of the whole set, as if one
process had seen everything in rank order. Only tensors travel between ranks
(strings as UTF-8 bytes); nothing is pickled.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from jaxtyping import Float
from torch import Tensor

from steerlens.errors import InvalidArgumentError


def check_initialized() -> None:
    """Raise unless a default process group exists."""
    if not (dist.is_available() and dist.is_initialized()):
        raise InvalidArgumentError(
            "distributed=True needs torch.distributed to be initialised in every process: call "
            "torch.distributed.init_process_group('nccl' or 'gloo', ...) first (torchrun sets the environment)."
        )


def _device() -> torch.device:
    """Where collectives run: the current GPU for NCCL, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(value: Tensor) -> Tensor:
    """``value`` summed over ranks (same shape on every rank), on ``value``'s device."""
    moved = value.detach().to(_device()).clone()
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    return moved.to(value.device)


def all_gather_rows(rows: Float[Tensor, "n d"]) -> Float[Tensor, "total d"]:
    """Every rank's rows, concatenated in rank order (ranks may hold different numbers of rows)."""
    device = _device()
    local = rows.detach().to(device)
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([local.shape[0]], device=device))
    most = int(max(c.item() for c in counts))
    padded = torch.zeros((most, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts)]).to(rows.device)


def all_gather_strings(texts: list[str]) -> list[str]:
    """Every rank's strings, concatenated in rank order."""
    encoded = [t.encode("utf-8") for t in texts]
    width = all_sum(torch.tensor([max((len(b) for b in encoded), default=0)])).item()  # an upper bound
    table = torch.zeros((len(encoded), int(width) + 1), dtype=torch.long)
    for row, data in enumerate(encoded):
        table[row, 0] = len(data)
        table[row, 1 : 1 + len(data)] = torch.tensor(list(data), dtype=torch.long)
    rows = all_gather_rows(table)
    return [bytes(row[1 : 1 + int(row[0])].tolist()).decode("utf-8") for row in rows]


def rank_offset(n_local: int) -> int:
    """How many items the ranks before this one hold (the global index of this rank's first item)."""
    counts = all_gather_rows(torch.tensor([[n_local]]))
    return int(counts[: dist.get_rank()].sum().item())
