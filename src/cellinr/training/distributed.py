"""Data-parallel training across processes (``torchrun``) with DistributedDataParallel.

Launch: ``torchrun --nproc_per_node=G [--nnodes=N --node_rank=K --rdzv_endpoint=HOST:PORT] -m cellinr
train DATASET --out RUN``. torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
:func:`init_distributed` reads them, picks the ``nccl`` backend on CUDA and ``gloo`` on CPU, and binds
each process to GPU ``LOCAL_RANK``. Without those variables (or WORLD_SIZE 1) training is single-process.

Every process holds the whole model, codes and rotations inside one DDP-wrapped module, so the
gradients of the codes are averaged like the network's; each process trains on its share of every
global batch (see :mod:`cellinr.training.sampling`) and the loss is a mean over equally many points
per process, so the averaged gradient equals the single-process gradient of the same batch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    """Where this process stands in a data-parallel job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device):
    """Join the process group described by torchrun's environment variables.

    Parameters
    ----------
    device : the resolved ``torch.device`` (its type selects the backend).

    Returns
    -------
    (DistInfo, torch.device) : CUDA processes get ``cuda:LOCAL_RANK``.
    """
    import torch
    import torch.distributed as dist

    world = env_world_size()
    if world <= 1:
        return DistInfo(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    initialised_here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        initialised_here = True
        log.info("process %d of %d joined (%s)", rank, world, backend)
    return DistInfo(rank, world, local_rank, initialised_here), device


def cleanup(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    import torch.distributed as dist

    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_mean(tensor, info: DistInfo):
    """In-place mean of ``tensor`` over all processes; returns it."""
    if info.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= info.world_size
    return tensor


def broadcast_object(obj, info: DistInfo):
    """``obj`` of process 0, on every process (for small Python values such as error messages)."""
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_worker(rank: int, world_size: int, port: int, threads: int | None, fn, args, kwargs) -> None:
    import torch

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    if threads:
        torch.set_num_threads(threads)
    fn(*args, **kwargs)


def launch_local(world_size: int, fn, *args, threads: int | None = None, **kwargs) -> None:
    """Run ``fn(*args, **kwargs)`` in ``world_size`` local processes joined like torchrun would.

    For tests and single-machine CPU runs (gloo); on GPUs prefer ``torchrun``. ``fn`` must be
    importable (a module-level function such as :func:`cellinr.training.shape.train`).
    """
    import torch.multiprocessing as mp

    port = _free_port()
    mp.start_processes(
        _local_worker, args=(world_size, port, threads, fn, args, kwargs), nprocs=world_size, join=True,
        start_method="spawn",
    )
