"""Pieces of a training run that are not the loop itself: optimiser, LR schedule, RNG state, sampling."""
import math
import random
from typing import Dict, Iterator, List, Sequence

import numpy as np
import torch


def build_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam (the original project's choice) or SGD with momentum 0.9 (the paper's)."""
    params = [p for p in model.parameters() if p.requires_grad]
    # The fused kernels update every parameter in one pass (ResNet-50 Adam step: 71 ms -> 16 ms on CPU).
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, fused=True)


def capped_warmup(warmup_iterations: int, iterations_per_epoch: int) -> int:
    """The warm-up length a run gets: at most the first epoch, as torchvision's detection references
    do (min(1000, len(loader) - 1)), so a short fine-tune reaches its peak LR within its first epoch."""
    return max(0, min(warmup_iterations, iterations_per_epoch - 1))


def plateau_factor(epoch_losses: Sequence[float], patience: int = 3, gamma: float = 0.1,
                   threshold: float = 1e-4) -> float:
    """The LR factor after ``epoch_losses``, by the rule of ``torch.optim.lr_scheduler.ReduceLROnPlateau``
    (mode min, relative threshold, no cooldown) stepped once per epoch on its loss, as the original
    project's train.py steps it: x ``gamma`` once ``patience`` epochs in a row fail to lower the best loss.

    A function of the losses alone, so a resumed run, which has them in its history, gets the same LR.
    A NaN loss (an epoch whose steps were all skipped) counts as no improvement. Unlike torch, it
    has no floor (torch ignores a decay that changes the LR by less than 1e-8).
    """
    factor, best, bad_epochs = 1.0, math.inf, 0
    for loss in epoch_losses:
        if loss < best * (1 - threshold):
            best, bad_epochs = loss, 0
        else:
            bad_epochs += 1
        if bad_epochs > patience:
            factor *= gamma
            bad_epochs = 0
    return factor


class LRSchedule:
    """Per-iteration LR factor: linear warm-up, then cosine decay to 0, step decay, plateau decay or constant.

    step: multiplied by ``gamma`` at each milestone (in iterations). plateau: multiplied by ``gamma``
    when the epoch losses (``set_epoch_losses``) stop falling, see ``plateau_factor``.
    """

    def __init__(
        self,
        total_iterations: int,
        warmup_iterations: int = 0,
        warmup_factor: float = 0.001,
        kind: str = "cosine",
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        patience: int = 3,
    ):
        self.total_iterations = max(1, total_iterations)
        self.warmup_iterations = warmup_iterations
        self.warmup_factor = warmup_factor
        self.kind = kind
        self.milestones = sorted(milestones)
        self.gamma = gamma
        self.patience = patience
        self.plateau = 1.0

    def __call__(self, iteration: int) -> float:
        factor = 1.0
        if iteration < self.warmup_iterations:
            progress = iteration / self.warmup_iterations
            factor = self.warmup_factor + (1 - self.warmup_factor) * progress
        if self.kind == "cosine":
            factor *= 0.5 * (1 + math.cos(math.pi * min(iteration, self.total_iterations) / self.total_iterations))
        elif self.kind == "step":
            factor *= self.gamma ** sum(iteration >= m for m in self.milestones)
        elif self.kind == "plateau":
            factor *= self.plateau
        return factor

    def set_epoch_losses(self, epoch_losses: Sequence[float]) -> None:
        """The mean training loss of every epoch so far (the plateau schedule's input)."""
        self.plateau = plateau_factor(epoch_losses, self.patience, self.gamma)

    def describe(self, peak_lr: float) -> str:
        """One line: peak LR, warm-up, decay and length, e.g. for the start of a run's log."""
        if self.warmup_iterations:
            warmup = f"linear warm-up from {self.warmup_factor:g}x over {self.warmup_iterations} iterations"
        else:
            warmup = "no warm-up"
        if self.kind == "cosine":
            decay = f"cosine decay to 0 at iteration {self.total_iterations}"
        elif self.kind == "step":
            decay = (f"x{self.gamma:g} at iterations {', '.join(map(str, self.milestones))}" if self.milestones
                     else "no decay (no --lr_steps)")
            decay = f"step decay {decay}, {self.total_iterations} iterations"
        elif self.kind == "plateau":
            decay = (f"x{self.gamma:g} after {self.patience} epochs without a lower epoch loss, "
                     f"{self.total_iterations} iterations")
        else:
            decay = f"constant, {self.total_iterations} iterations"
        return f"peak LR {peak_lr:g}, {warmup}, {decay}"


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: LRSchedule, peak_lr: float,
                    iteration: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR at ``iteration`` of ``schedule``, peaking at ``peak_lr``: each param group's LR becomes
    ``peak_lr * schedule(iteration)`` and follows the schedule from there, whatever LR or schedule an
    optimizer state loaded from a checkpoint carried."""
    for group in optimizer.param_groups:
        group["initial_lr"] = peak_lr
    # LambdaLR takes one step on construction: from last_epoch = iteration - 1 to iteration.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule, last_epoch=iteration - 1)


def refresh_lr(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set the LR of the current iteration again after the schedule itself changed (a plateau
    decision at the end of an epoch), so the next step already takes it."""
    lrs = [base * scheduler.lr_lambdas[0](scheduler.last_epoch) for base in scheduler.base_lrs]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs


def capture_rng_state() -> Dict[str, object]:
    """Every random generator a run draws from, in a form ``torch.load(weights_only=True)`` accepts."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, object]) -> None:
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class SeededSamples(torch.utils.data.Dataset):
    """A dataset whose random augmentation depends only on (seed, epoch, index).

    Each sample is drawn under its own torch seed, so a run resumed in the middle of an epoch, or
    run with a different number of loader workers, sees exactly the same flips.
    """

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            # Modulo 2**63: torch seeds are 64-bit, and a large --seed would overflow the product.
            torch.manual_seed(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % 2 ** 63)
            return self.dataset[index]


class SkipBatches(torch.utils.data.Sampler):
    """A batch sampler with its first ``skip`` batches left out (resuming inside an epoch)."""

    def __init__(self, batch_sampler, skip: int):
        self.batch_sampler = batch_sampler
        self.skip = skip

    def __iter__(self) -> Iterator[List[int]]:
        for position, batch in enumerate(self.batch_sampler):
            if position >= self.skip:
                yield batch

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)
