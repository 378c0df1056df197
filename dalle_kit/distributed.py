"""Training in several processes: torch.distributed under ``torchrun``, DistributedDataParallel for the gradients.

``torchrun --nproc_per_node=N -m dalle_kit run RECIPE`` (or ``dalle-kit run --nproc N RECIPE``) starts N copies of
the ordinary command; each finds ``WORLD_SIZE``/``RANK`` in its environment and joins one process group (gloo on the
CPU, nccl on CUDA, one GPU per process). What the processes share, and how:

- **weights**: the same seed builds the same networks, and a pipeline calls each trainable network through
  `parallel` (`DistributedDataParallel`), which averages the gradients in ``backward``; every optimizer step is then
  the same on every rank. The trainer verifies at each checkpoint that the weights are bit for bit the same.
- **data and noise**: rank 0 keeps the single-process streams (so a checkpoint resumes in any number of processes);
  every other rank re-seeds the pipeline's generators from (seed, generator name, rank, step) when training starts
  and after each checkpoint, so it draws batches and noise of its own, reproducibly.
- **batch size**: ``[train] batch_size`` is per process; the global batch is N times larger.
- **files**: rank 0 alone writes (run directory, metrics, checkpoints, grids, events, evaluation); the training
  events fire on rank 0 only. Checkpoints hold no trace of the process count: written by N, resumed by M.

Nothing here communicates on its own beyond `torch.distributed` collectives; with one process every function is
a no-op and `parallel` returns the module itself.
"""

from __future__ import annotations

import gc
import hashlib
import os
import warnings
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

#: How long a collective waits for the slowest rank: rank 0 evaluating mid-run makes the others wait that long.
TIMEOUT = timedelta(hours=3)


def requested() -> bool:
    """Whether this process was started by torchrun (or alike) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True in the process that writes files (rank 0, or the only one)."""
    return rank() == 0


def backend() -> str:
    return dist.get_backend() if active() else "none"


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init(device: torch.device) -> None:
    """Join the process group torchrun describes (no-op in a single process or when already joined)."""
    if not requested() or active():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)


def shutdown(*, clean: bool = False) -> None:
    """Leave the process group. After a clean finish every rank first waits for the others (rank 0 may still be
    evaluating), so none closes its connections while a peer still uses them; the networks' DDP wrappers, which
    hold the group, are collected before it is destroyed, while the interpreter is fully alive (gloo work freed at
    interpreter exit can abort the process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean and active():
        try:
            dist.barrier()
        except RuntimeError:  # a rank that failed meanwhile (rank 0 evaluating) has printed its own error
            pass
    gc.collect()
    dist.destroy_process_group()


def parallel(module: torch.nn.Module, device: torch.device, *, sync_batchnorm: bool = False) -> torch.nn.Module:
    """`module` wrapped in DistributedDataParallel when several processes train (itself otherwise, or when it has
    nothing to train). Call the wrapper in the forward passes whose loss trains the module; the wrapped module
    itself stays the one saved, so checkpoints do not depend on the process count."""
    if not active() or not any(p.requires_grad for p in module.parameters()):
        return module
    # A weight of shape [1, C, k, k] gets a gradient whose (meaningless) stride on the size-1 dimension differs from
    # DDP's bucket after a double backward (gradient penalties); torch warns once per process, to no purpose.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    if sync_batchnorm:
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)  # replaces the BatchNorm children in place
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None
    )


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a run directory's path)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_true(*flags: bool) -> tuple[bool, ...]:
    """Each flag OR-ed over the ranks (stop requests, non-finite losses), so every rank takes the same branch."""
    if not active():
        return flags
    t = torch.tensor([float(f) for f in flags], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def mean(values: dict[str, float]) -> dict[str, float]:
    """The values averaged over the ranks (each rank's losses are on its own batch)."""
    if not active() or not values:
        return values
    t = torch.tensor([float(v) for v in values.values()], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return dict(zip(values, (t / world_size()).tolist()))


def digest(modules: dict[str, torch.nn.Module]) -> str:
    """sha256 of the modules' parameters. Buffers are left out: DDP sends rank 0's to every rank at each forward
    through the wrapper (BatchNorm statistics, spectral norm's vectors), calls outside it move them locally, and the
    checkpoint keeps rank 0's."""
    h = hashlib.sha256()
    for key in sorted(modules):
        for name, tensor in modules[key].named_parameters():
            h.update(f"{key}.{name}".encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def differing_ranks(modules: dict[str, torch.nn.Module]) -> list[int]:
    """Ranks whose weights differ from rank 0's (empty when all agree)."""
    if not active():
        return []
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, digest(modules))
    return [r for r, d in enumerate(gathered) if d != gathered[0]]


def rank_seed(seed: int, name: str, step: int, rank_: int | None = None) -> int:
    """A 63-bit seed for generator `name` of rank `rank_` from `step` on (rank 0 never re-seeds)."""
    text = f"{seed}/{name}/{rank() if rank_ is None else rank_}/{step}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def reseed(rngs: dict[str, torch.Generator], seed: int, step: int) -> None:
    """On ranks other than 0: give each generator (and the global one) a stream of this rank's own."""
    if not active() or is_main():
        return
    for name, rng in rngs.items():
        rng.manual_seed(rank_seed(seed, name, step))
    torch.manual_seed(rank_seed(seed, "torch", step))


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
