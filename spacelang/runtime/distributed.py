"""Data-parallel runs under ``torchrun``: one process (rank) per device, gradients averaged.

``torchrun --nproc-per-node N -m spacelang search|train ...`` starts N copies of the
command; `init_from_env` joins them into one process group from the variables torchrun
sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``): NCCL when CUDA is
available (rank ``r`` on ``cuda:LOCAL_RANK``), Gloo on CPUs. Without those variables
everything here is a no-op for a world of one, so the single-process path runs the same
code.

The contract a distributed run keeps:

- ``batch_size`` is the global batch: each rank loads its own contiguous slice of every
  global batch (`shard`), so the data, and with averaged gradients the updates, are those of
  one process with the same batch; learning rates are used as configured;
- gradients (weights and α/β) are averaged with one flat all-reduce per dtype
  (`average_gradients`), after which every rank holds the same bits and takes the same
  optimizer step;
- scalars that decide control flow (the loss, its finiteness) are averaged too
  (`mean_scalars`), so every rank stops at the same update;
- rank 0 alone writes files (`is_main`); a lost peer surfaces as `RankLost`.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import torch
import torch.distributed as dist

__all__ = [
    "RankLost",
    "World",
    "all_reduce_grads",
    "average_gradients",
    "broadcast_",
    "broadcast_object",
    "check_lockstep",
    "default_device",
    "gather_objects",
    "init_from_env",
    "is_distributed",
    "is_main",
    "local_rank",
    "mean_scalars",
    "rank",
    "restart_count",
    "shard",
    "shard_items",
    "shutdown",
    "world",
    "world_size",
]

T = TypeVar("T")


class RankLost(Exception):
    """A collective failed: another rank stopped or died (its own message says why)."""


@attrs.frozen
class World:
    """This process's place in the job: ``rank`` of ``size``, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def is_distributed() -> bool:
    """Whether a process group of more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (before `init_from_env`: the launcher's ``RANK``, else 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 outside torchrun)."""
    return _env_int("LOCAL_RANK", 0)


def world_size() -> int:
    """Ranks in the active process group (1 without one)."""
    return dist.get_world_size() if is_distributed() else 1


def world() -> World:
    return World(rank() if is_distributed() else 0, world_size(), local_rank())


def is_main() -> bool:
    """Whether this process writes the run's files and output (rank 0)."""
    return rank() == 0


def restart_count() -> int:
    """How often torchrun has restarted the job's workers (``--max-restarts``); 0 at first."""
    return _env_int("TORCHELASTIC_RESTART_COUNT", 0)


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def init_from_env() -> World:
    """Join the job torchrun started (idempotent); a world of one outside torchrun.

    The backend is NCCL when CUDA is available (each rank on ``cuda:LOCAL_RANK``), else Gloo.
    """
    if not dist.is_available() or _env_int("WORLD_SIZE", 1) <= 1:
        return world()
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(default_device())
            backend = "nccl"
        else:
            backend = "gloo"
        try:
            dist.init_process_group(backend=backend, store=_attempt_store(),
                                    rank=_env_int("RANK", 0),
                                    world_size=_env_int("WORLD_SIZE", 1))
        except (RuntimeError, ValueError) as exc:
            raise RankLost(f"cannot join the distributed job ({backend}): {_short(exc)}") \
                from None
    return world()


def _attempt_store() -> dist.Store:
    """The launcher's key-value store, with keys private to this restart of the workers.

    torchrun keeps one store for all restarts of a job; without a prefix per restart the
    new workers would read the dead ones' addresses and fail to connect.
    """
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"),
                          _env_int("MASTER_PORT", 29500), _env_int("WORLD_SIZE", 1),
                          is_master=not agent_hosts_it and _env_int("RANK", 0) == 0,
                          multi_tenant=not agent_hosts_it)
    return dist.PrefixStore(f"spacelang/restart-{restart_count()}", store)


def shutdown() -> None:
    """Leave the process group (at the end of a command).

    Then collect garbage: objects still held in reference cycles were otherwise freed
    during interpreter shutdown, where gloo's teardown now and then aborted the process
    (SIGABRT, "terminate called without an active exception") after its work was done:
    2 of 19 runs of the NaN-stop scenario of `tests/runtime/distributed_worker.py`, none
    of 44 with this.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _collective(what: str, call: Callable[[], T]) -> T:
    """Run a collective; a failure (a peer gone) becomes `RankLost` naming ``what``."""
    try:
        return call()
    except RuntimeError as exc:
        raise RankLost(
            f"rank {rank()} of {world_size()}: lost contact with the other ranks during "
            f"{what} ({_short(exc)}); another rank stopped or died, see its message. The run "
            "folder keeps the last checkpoint: torchrun --max-restarts resumes from it "
            "automatically, or rerun with --resume"
        ) from None


# --------------------------------------------------------------------------- data


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of the last dimension of ``batch`` (global batches).

    ``(..., B) -> (..., B / world)``; ``B`` must be a multiple of the world size.
    """
    size, me = world_size(), rank() if is_distributed() else 0
    if size == 1:
        return batch
    total = batch.shape[-1]
    if total % size:
        raise ValueError(f"the global batch of {total} does not split evenly over "
                         f"{size} ranks; make batch_size a multiple of {size}")
    part = total // size
    return batch[..., me * part:(me + 1) * part]


def shard_items(count: int) -> list[int]:
    """The indices of ``count`` items this rank handles: ``rank, rank + world, ...``."""
    return list(range(rank() if is_distributed() else 0, count, world_size()))


# --------------------------------------------------------------------------- collectives


def _buckets(tensors: Sequence[torch.Tensor]) -> dict[tuple[torch.dtype, torch.device],
                                                       list[int]]:
    out: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, t in enumerate(tensors):
        out.setdefault((t.dtype, t.device), []).append(i)
    return out


def average_gradients(grads: Sequence[torch.Tensor | None],
                      like: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """The mean over ranks of ``grads`` (one per tensor of ``like``; None: no gradient).

    A gradient no rank has stays None (an optimizer then skips it, as in one process); one
    that some ranks lack counts as zero there. One all-reduce per dtype, flat, so every rank
    receives the same bits. Outside a distributed run ``grads`` come back unchanged.
    """
    grads = list(grads)
    if not is_distributed():
        return grads
    size = world_size()
    out: list[torch.Tensor | None] = list(grads)
    for (dtype, device), members in _buckets(like).items():
        parts = []
        for i in members:
            g = grads[i]
            parts.append(torch.zeros(like[i].numel(), dtype=dtype, device=device) if g is None
                         else g.detach().reshape(-1).to(dtype))
        present = torch.tensor([0.0 if grads[i] is None else 1.0 for i in members],
                               dtype=dtype, device=device)
        flat = torch.cat([*parts, present])
        _collective("gradient averaging", lambda flat=flat: dist.all_reduce(flat))
        flat.div_(size)
        counts = flat[-len(members):].tolist()  # one device sync, not one per tensor
        offset = 0
        for j, i in enumerate(members):
            n = like[i].numel()
            out[i] = flat[offset:offset + n].view_as(like[i]) if counts[j] > 0 else None
            offset += n
    return out


def all_reduce_grads(params: Sequence[torch.Tensor]) -> None:
    """Average ``p.grad`` over ranks in place for every tensor of ``params``."""
    if not is_distributed():
        return
    params = list(params)
    for p, g in zip(params, average_gradients([p.grad for p in params], params), strict=True):
        p.grad = g


def mean_scalars(*values: float | torch.Tensor) -> list[float]:
    """The mean over ranks of each scalar (float64); a non-finite value anywhere stays so."""
    local = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if not is_distributed():
        return local.tolist()
    device = default_device() if dist.get_backend() == "nccl" else torch.device("cpu")
    local = local.to(device)
    _collective("loss averaging", lambda: dist.all_reduce(local))
    return (local / world_size()).tolist()


def broadcast_(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` on every rank with rank ``src``'s values (flat, per dtype)."""
    if not is_distributed():
        return
    tensors = list(tensors)
    for members in _buckets(tensors).values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in members])
        _collective("broadcast", lambda flat=flat: dist.broadcast(flat, src))
        offset = 0
        with torch.no_grad():
            for i in members:
                n = tensors[i].numel()
                tensors[i].copy_(flat[offset:offset + n].view_as(tensors[i]))
                offset += n


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable values between our own ranks)."""
    if not is_distributed():
        return obj
    box = [obj]
    _collective("broadcast", lambda: dist.broadcast_object_list(box, src))
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    _collective("gather", lambda: dist.all_gather_object(out, obj))
    return out


def check_lockstep(tensors: dict[str, torch.Tensor]) -> str | None:
    """None when every rank holds bitwise the same ``tensors``, else the first name that
    differs (the same answer on every rank)."""
    if not is_distributed():
        return None
    digests = {}
    for name, t in tensors.items():
        data = t.detach().to("cpu").reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        digests[name] = hashlib.blake2b(data, digest_size=16).hexdigest()
    seen = gather_objects(digests)
    for name in tensors:
        if any(d.get(name) != digests[name] for d in seen):
            return name
    return None
