"""Data-parallel training across processes (``torchrun``) that follows the single-process optimisation.

Launch: ``torchrun --nproc_per_node=G [--nnodes=N --node_rank=K --rdzv_endpoint=HOST:PORT] -m cellinr
train DATASET --out RUN``. torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
:func:`init_distributed` reads them, picks the ``nccl`` backend on CUDA and ``gloo`` on CPU, and binds
each process to GPU ``LOCAL_RANK``. Without those variables (or WORLD_SIZE 1) training is single-process.

Why not plain DistributedDataParallel: the shape model's training is chaotic. A relative change of
1e-7 in the initial codes of a single-process ``small`` run grows to 4e-4 in the weights after 3
epochs and to 0.39 after 20 (measured; the same growth as 1 vs 2 DDP processes, 3e-7 -> 4e-4 ->
0.39, whose 20-epoch losses differed by 10 %). DDP's averaged gradient equals the single-process
gradient only up to the order of the floating-point sums (a batched matmul over all points vs two
half batches plus an all-reduce), and that rounding is enough.

So every optimisation step is computed frame by frame (:func:`ordered_gradients`): each process
computes the gradient of each of its frames of the global batch separately, the per-frame gradients
are gathered (``all_gather``), and every process adds them up in the global batch order. A single
process runs the same code with a trivial gather, so 1 and N processes add the same numbers in the
same order: the gradients, hence the whole run, are identical (bitwise on CPU with the same thread
count; on GPUs as long as the kernels are deterministic for equal shapes). The frames of a step and
their points come from :class:`cellinr.training.sampling.PointPool`, which gives process r the
positions r, r + W, ... of every global batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
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



def share_error(error: BaseException | None, info: DistInfo) -> None:
    """Raise on every process what process 0 met: its own error there, a RunError naming it elsewhere."""
    from cellinr.errors import RunError

    message = broadcast_object(None if error is None else str(error), info)
    if error is not None:
        raise error
    if message is not None:
        raise RunError(f"process 0 failed: {message}")

def broadcast_parameters(module, info: DistInfo) -> None:
    """Copy process 0's parameters and buffers into every process (the same start everywhere)."""
    if not info.enabled:
        return
    import torch.distributed as dist

    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def global_position(local_index: int, info: DistInfo) -> int:
    """Position in the global batch of this process's frame ``local_index`` (positions r, r + W, ...)."""
    return local_index * info.world_size + info.rank


@dataclass
class FrameTerms:
    """What one frame contributes to an optimisation step (see :func:`ordered_gradients`)."""

    loss: object
    """Scalar tensor to differentiate: the frame's share of the step's loss (already divided by the
    global batch size, and scaled by a gradient scaler if one is used)."""
    codes: object
    """(1, L) tensor: the frame's latent code as looked up from the code table (not a leaf)."""
    seq: int
    """Row of the code table that ``codes`` came from."""
    logged: object
    """(k,) tensor of values to report, summed over the frames of the step."""


def ordered_gradients(
    frame_terms: Callable[[int], FrameTerms],
    n_local: int,
    *,
    params: Sequence,
    code_table,
    info: DistInfo,
):
    """Set the gradients of a step frame by frame, summed in the global batch order; same on 1 or N processes.

    Parameters
    ----------
    frame_terms : ``frame_terms(j)`` builds the graph of this process's local frame ``j`` and returns
        its :class:`FrameTerms`.
    n_local : frames of the global batch held by this process (the same on every process).
    params : the trainable parameters other than the code table (network, rotations); their
        ``.grad`` is replaced.
    code_table : the (N, L) code parameter; its ``.grad`` is replaced by the dense sum of the
        frames' code gradients, row ``seq`` by row.
    info : the process group.

    Returns
    -------
    (k,) tensor : the sum of every frame's ``logged`` values over the global batch (on every process).

    Notes
    -----
    Per frame the gradient with respect to ``params`` and to the frame's code row is flattened into
    one vector; the vectors of all processes are gathered and added one after the other in the order
    of the global batch (position ``j * W + r`` for local frame j of process r). Communication per
    step: W x n_local vectors of (number of parameters + L + k + 1) floats.
    """
    import torch

    params = list(params)
    rows = []
    sizes = [p.numel() for p in params]
    for j in range(int(n_local)):
        terms = frame_terms(j)
        grads = torch.autograd.grad(terms.loss, [*params, terms.codes], allow_unused=True)
        flat = [torch.zeros(n, device=code_table.device) if g is None else g.reshape(-1).float()
                for n, g in zip([*sizes, terms.codes.numel()], grads)]
        logged = terms.logged.detach().reshape(-1).float()
        seq = torch.tensor([float(terms.seq)], device=code_table.device)
        rows.append(torch.cat([*flat, logged, seq]))
    local = torch.stack(rows)  # (n_local, P + L + k + 1)
    if info.enabled:
        import torch.distributed as dist

        gathered = [torch.empty_like(local) for _ in range(info.world_size)]
        dist.all_gather(gathered, local.contiguous())
    else:
        gathered = [local]
    world = len(gathered)
    ordered = [gathered[p % world][p // world] for p in range(world * int(n_local))]
    n_dense, n_code = sum(sizes), code_table.shape[1]
    dense = ordered[0][:n_dense].clone()
    logged_sum = ordered[0][n_dense + n_code:-1].clone()
    table_grad = torch.zeros_like(code_table, dtype=torch.float32)
    for k, vec in enumerate(ordered):
        if k:
            dense += vec[:n_dense]
            logged_sum += vec[n_dense + n_code:-1]
        row = int(vec[-1].item())
        table_grad[row] += vec[n_dense:n_dense + n_code]
    start = 0
    for p, n in zip(params, sizes):
        p.grad = dense[start:start + n].view_as(p).to(p.dtype)
        start += n
    code_table.grad = table_grad.to(code_table.dtype)
    return logged_sum


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
