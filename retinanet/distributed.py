"""torchrun-launched multi-process training: set-up, rank queries, reductions."""
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# How long a process waits at a collective for the others before the run fails: the other processes
# wait while the first one scores the validation set, writes checkpoints and draws the curves, which
# on COCO can outlast NCCL's default of 10 minutes.
DEFAULT_TIMEOUT_MINUTES = 60.0


def init_distributed(device_name: "str | None", timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES
                     ) -> DistributedContext:
    """Join the process group torchrun describes in the environment (NCCL on GPUs, gloo on CPU).

    A plain ``python train.py`` (no WORLD_SIZE) is a single process.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    context = DistributedContext(
        rank=int(os.environ["RANK"]), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )
    use_cuda = torch.cuda.is_available() and (device_name is None or device_name.startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(context.local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                            timeout=datetime.timedelta(minutes=timeout_minutes))
    return context


def process_device(context: DistributedContext, device_name: "str | None") -> str:
    """Each process of a multi-GPU run drives the GPU of its local rank."""
    if context.enabled and torch.cuda.is_available() and (device_name is None or device_name.startswith("cuda")):
        return f"cuda:{context.local_rank}"
    return device_name or ("cuda" if torch.cuda.is_available() else "cpu")


def all_reduce_mean(values: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Mean of a tensor over all processes (a copy; the input is untouched)."""
    if not context.enabled:
        return values
    values = values.detach().clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / context.world_size


def all_true(flag: bool, device: torch.device, context: DistributedContext) -> bool:
    """True only when ``flag`` is True in every process (so all skip or all step together)."""
    if not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0)


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
