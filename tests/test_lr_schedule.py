"""The LR schedule: warm-up, decay, the warm-up cap, and a scheduler placed at a checkpoint's iteration."""
import pytest
import torch

from retinanet.training import LRSchedule, build_scheduler, capped_warmup, plateau_factor, refresh_lr


def test_warmup_then_constant_cosine_and_step_factors():
    warmup = LRSchedule(10, warmup_iterations=2, warmup_factor=0.1, kind="constant")
    assert [warmup(i) for i in (0, 1, 2, 9)] == pytest.approx([0.1, 0.55, 1.0, 1.0])
    cosine = LRSchedule(12, kind="cosine")  # cos(pi i / 12) at i = 4, 6, 8: 1/2, 0, -1/2
    assert [cosine(i) for i in (0, 4, 6, 8, 12, 15)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    step = LRSchedule(10, kind="step", milestones=[6, 3], gamma=0.1)
    assert [step(i) for i in (2, 3, 5, 6, 9)] == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01])


def test_warmup_is_capped_at_the_first_epoch():
    # 5 epochs of 300 images at batch 4: 75 iterations an epoch, so 500 warm-up iterations become 74
    assert capped_warmup(500, 75) == 74
    assert capped_warmup(10, 75) == 10
    assert capped_warmup(500, 1) == 0
    described = LRSchedule(375, capped_warmup(500, 75), 0.001, "cosine").describe(1e-4)
    assert described == ("peak LR 0.0001, linear warm-up from 0.001x over 74 iterations, "
                         "cosine decay to 0 at iteration 375")


def test_scheduler_follows_the_new_schedule_from_an_optimizer_state_of_another():
    model = torch.nn.Linear(3, 2)
    old = torch.optim.SGD(model.parameters(), lr=0.5)
    old_scheduler = torch.optim.lr_scheduler.LambdaLR(old, LRSchedule(4, kind="cosine"))
    for _ in range(4):
        old.step()
        old_scheduler.step()
    assert old.param_groups[0]["lr"] == pytest.approx(0.0)  # the end of the old 4-iteration schedule

    resumed = torch.optim.SGD(model.parameters(), lr=0.5)
    resumed.load_state_dict(old.state_dict())
    schedule = LRSchedule(8, kind="cosine")
    scheduler = build_scheduler(resumed, schedule, 2.0, iteration=4)
    assert scheduler.last_epoch == 4
    assert resumed.param_groups[0]["lr"] == pytest.approx(2.0 * 0.5)  # cos(pi 4 / 8) = 0
    resumed.step()
    scheduler.step()
    assert resumed.param_groups[0]["lr"] == pytest.approx(2.0 * schedule(5))

    fresh = torch.optim.SGD(model.parameters(), lr=0.5)
    build_scheduler(fresh, LRSchedule(8, warmup_iterations=2, warmup_factor=0.1), 2.0)
    assert fresh.param_groups[0]["lr"] == pytest.approx(2.0 * 0.1)


@pytest.mark.parametrize("patience", [0, 1, 3])
def test_plateau_factor_is_torchs_reduce_lr_on_plateau_stepped_per_epoch(patience):
    generator = torch.Generator().manual_seed(patience)
    # falling, flat, tiny (below the 1e-4 relative threshold) and NaN steps
    losses = [2.0, 1.5, 1.5, 1.49995, 1.6, 1.2, float("nan"), 1.3, 1.3, 1.3, 1.3, 1.1, 1.1000, 1.2]
    losses += (1 + torch.rand(30, generator=generator)).tolist()
    reference_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(reference_optimizer, patience=patience, factor=0.1)
    for epoch in range(len(losses)):
        reference.step(losses[epoch])
        lr = reference_optimizer.param_groups[0]["lr"]
        if lr < 1e-6:  # torch stops where a decay would change the LR by less than its eps, 1e-8
            break
        assert plateau_factor(losses[: epoch + 1], patience) == pytest.approx(lr, rel=1e-12), epoch
    assert reference_optimizer.param_groups[0]["lr"] < 1e-2  # it did decay


def test_plateau_schedule_takes_effect_from_the_next_step():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    schedule = LRSchedule(100, warmup_iterations=2, warmup_factor=0.1, kind="plateau", patience=0, gamma=0.5)
    scheduler = build_scheduler(optimizer, schedule, 2.0, iteration=4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2.0)
    schedule.set_epoch_losses([1.0, 1.0])  # no improvement in epoch 2: x0.5
    refresh_lr(scheduler)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0) and scheduler.get_last_lr() == [pytest.approx(1.0)]
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)
    assert schedule.describe(2.0) == ("peak LR 2, linear warm-up from 0.1x over 2 iterations, "
                                      "x0.5 after 0 epochs without a lower epoch loss, 100 iterations")
