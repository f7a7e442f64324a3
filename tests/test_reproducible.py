"""Every random draw of a run derives from its seed and step: the same config gives the same
weights with any number of data-loading workers and across a resume, also for streamed image
folders with random augmentation (crops and flips drawn inside the workers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from transferscope import paths
from transferscope.config import TrainSpec
from transferscope.data import imagefolder
from transferscope.training.trainer import Trainer

from fixtures_data import make_imagefolder

SPEC = TrainSpec(epochs=2, batch_size=4, lr=0.05, momentum=0.9)


class Net(nn.Module):
    """Small enough for the CPU; with dropout, so the global generator's draws matter too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.conv(x)).mean((2, 3))))


def fresh() -> Net:
    torch.manual_seed(0)
    return Net()


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = make_imagefolder(tmp_path_factory.mktemp("aug") / "tree", {"a": 6, "b": 6, "c": 6})
    return imagefolder.build(root, seed=0, image_size=8, augment=True, test_fraction=0.25)


def train(splits, workers: int, run_dir: Path | None = None, **kwargs) -> dict[str, torch.Tensor]:
    model = fresh()
    # The global generator in any state: a P-T run does not seed it before training.
    torch.manual_seed(int(torch.randint(0, 2**31, ()).item()) + workers)
    trainer = Trainer(SPEC, "multiclass", seed=5, num_workers=workers, run_dir=run_dir, **kwargs)
    trainer.fit(model, splits.train, splits.test)
    return model.state_dict()


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_augmented_image_folder_gives_the_same_weights_with_any_number_of_workers(
    splits, one_thread
):
    assert splits.train[0][0].shape == (3, 8, 8)
    reference = train(splits, workers=2)
    assert_same(reference, train(splits, workers=2))
    assert_same(reference, train(splits, workers=0))
    assert_same(reference, train(splits, workers=1))
    # The augmentation does draw: another seed gives other weights.
    other = fresh()
    Trainer(SPEC, "multiclass", seed=6, num_workers=0).fit(other, splits.train, splits.test)
    assert not torch.equal(other.state_dict()["fc.weight"], reference["fc.weight"])


class Interrupt(Exception):
    pass


def test_augmented_run_resumed_mid_epoch_gives_the_same_weights(splits, tmp_path, one_thread):
    reference = train(splits, workers=2)

    def stop(step: int, total: int) -> None:
        if step == 5:  # inside the second epoch (4 batches an epoch), past a resume point
            raise Interrupt

    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(splits, workers=2, run_dir=run_dir, resume_every_s=0.0, on_step=stop)
    assert (run_dir / "checkpoints" / paths.RESUME).exists()
    assert_same(reference, train(splits, workers=0, run_dir=run_dir))


def test_fit_leaves_the_callers_generator_alone(splits, one_thread):
    model = fresh()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    Trainer(SPEC, "multiclass", seed=5, num_workers=0).fit(model, splits.train, splits.test)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_fit_starts_its_loader_workers_once(splits, one_thread):
    """Within kept_loaders() (every fit) a streamed split's loader workers start once and serve
    every pass: in a process started with spawn (the local executor's workers, --jobs 2) each
    start imported torch again, seconds per epoch and per evaluation. The batches are those of a
    loader started for each pass, also after a pass left early."""
    from transferscope.training import loaders

    n = len(splits.train)

    def one_pass(epoch: int, stop: int | None = None) -> list[torch.Tensor]:
        order, seeds = loaders.epoch_order(n, 5, epoch), loaders.sample_seeds(n, 5, epoch)
        batches = loaders.iterate(splits.train, 4, order=order, seeds=seeds, num_workers=2)
        return [x for i, (x, _) in enumerate(batches) if stop is None or i < stop]

    fresh_loaders = [one_pass(epoch) for epoch in range(3)]
    with loaders.kept_loaders():
        pids = []
        kept = []
        for epoch in range(3):
            kept.append(one_pass(epoch))
            (entry,) = loaders._KEPT.get().values()  # type: ignore[union-attr]
            pids.append([w.pid for w in entry.loader._iterator._workers])
        early = loaders.iterate(splits.train, 4, order=loaders.epoch_order(n, 5, 9), num_workers=2)
        next(early)
        del early  # left after one batch
        kept.append(one_pass(2))
        workers = entry.loader._iterator._workers
    assert pids[0] == pids[1] == pids[2] and len(pids[0]) == 2
    assert not any(w.is_alive() for w in workers)  # stopped when the block ended
    for a, b in zip([*fresh_loaders, fresh_loaders[2]], kept, strict=True):
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
