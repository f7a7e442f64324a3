import math

import pytest
import torch
from safetensors import SafetensorError
from torch import nn

from transferscope import paths
from transferscope.config import TrainSpec
from transferscope.data.base import TensorImageDataset
from transferscope.errors import DiskFullError, TransferscopeError
from transferscope.training import checkpoints as ckpt
from transferscope.training.metrics import per_task_auc, score
from transferscope.training.schedule import lr_at
from transferscope.training.trainer import (
    DivergedError,
    Trainer,
    make_optimizer,
    pick_device,
    read_metrics,
)


def toy_data(n=128, multilabel=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    if multilabel:
        y = torch.stack([(x[:, 0, :4].mean((1, 2)) > 0), (x[:, 0, 4:].mean((1, 2)) > 0)], 1).float()
    else:
        y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0).long()
    return TensorImageDataset(x[: n * 3 // 4], y[: n * 3 // 4]), TensorImageDataset(
        x[n * 3 // 4 :], y[n * 3 // 4 :]
    )


class Tiny(nn.Module):
    def __init__(self, outputs=4):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.gain = nn.Parameter(torch.ones(1))  # a Fixup-style scalar
        self.fc = nn.Linear(4 * 8 * 8, outputs)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x) * self.gain).flatten(1))


def fresh(outputs=4):
    torch.manual_seed(0)
    return Tiny(outputs)


SPEC = TrainSpec(
    epochs=3,
    batch_size=16,
    lr=0.05,
    schedule="cosine",
    eval_points=[0.5],
    checkpoint_points=[0.25, 1, 3],
    mixup_alpha=0.4,
)


def test_same_seed_gives_bit_identical_weights():
    train, test = toy_data()
    a, b = fresh(), fresh()
    Trainer(SPEC, "multiclass", seed=3).fit(a, train, test)
    Trainer(SPEC, "multiclass", seed=3).fit(b, train, test)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    c = fresh()
    Trainer(SPEC, "multiclass", seed=4).fit(c, train, test)
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_evaluates_at_zero_each_epoch_and_fractions(tmp_path):
    train, test = toy_data()
    result = Trainer(SPEC, "multiclass", seed=0, run_dir=tmp_path).fit(fresh(), train, test)
    epochs = [r["epoch"] for r in result.history]
    assert epochs == [0.0, 0.5, 1.0, 2.0, 3.0]
    assert result.history[0]["train_loss"] is None
    assert all(r["train_loss"] > 0 for r in result.history[1:])
    assert read_metrics(tmp_path) == result.history
    assert result.final.metric == pytest.approx(result.history[-1]["metric"])


def test_checkpoints_initial_weights_and_predictions(tmp_path):
    train, test = toy_data()
    model = fresh()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(SPEC, "multiclass", seed=0, run_dir=tmp_path).fit(model, train, test)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [
        "epoch-0.25.safetensors",
        "epoch-0.safetensors",
        "epoch-1.safetensors",
        "epoch-3.safetensors",
        "final.safetensors",
    ]
    saved_init = ckpt.load_weights(tmp_path / "checkpoints" / "epoch-0.safetensors")
    assert all(torch.equal(saved_init[k], v) for k, v in init.items())
    final = ckpt.load_weights(tmp_path / "checkpoints" / "final.safetensors")
    assert all(torch.equal(final[k], v) for k, v in model.state_dict().items())
    import numpy as np

    outputs = np.load(tmp_path / "predictions" / "test_outputs.npy")
    assert outputs.shape == (len(test), 4)


class Interrupt(Exception):
    pass


def interrupt_at(stop_at, run_dir, train, test, spec=SPEC, model=fresh):
    """Train a fresh ``model()`` with seed 1 until step ``stop_at`` raises, as a killed run does,
    leaving its resume file in ``run_dir``."""

    def boom(step, total):
        if step == stop_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        Trainer(spec, "multiclass", seed=1, run_dir=run_dir, resume_every_s=0.0, on_step=boom).fit(
            model(), train, test
        )


def assert_same_weights(model, reference):
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


@pytest.mark.parametrize("stop_at", [5, 9, 12])
def test_interrupted_run_resumes_to_identical_weights(tmp_path, stop_at):
    train, test = toy_data()
    reference = fresh()
    ref = Trainer(SPEC, "multiclass", seed=1, run_dir=tmp_path / "ref").fit(reference, train, test)
    run_dir = tmp_path / "run"
    interrupt_at(stop_at, run_dir, train, test)
    assert (run_dir / "checkpoints" / paths.RESUME).exists()
    resumed = fresh()
    # A different init proves the weights come from the resume file.
    torch.nn.init.normal_(resumed.fc.weight)
    out = Trainer(SPEC, "multiclass", seed=1, run_dir=run_dir).fit(resumed, train, test)
    assert_same_weights(resumed, reference)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(out.history) == strip(ref.history)
    assert not (run_dir / "checkpoints" / paths.RESUME).exists()


@pytest.fixture
def threads():
    """Set torch's thread count for one test, then restore it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_a_run_resumes_with_the_thread_count_it_started_with(tmp_path, threads):
    """On the CPU a run's weights depend on torch's thread count (measured on this model: the
    head's weight gradient, a product summed over the batch, rounds otherwise with 1 and 2
    threads). A run started with 2 threads and resumed in a process that has 1 (another --jobs)
    trains on with 2 and says so: the weights are those of an uninterrupted 2-thread run, never
    a mix of the two."""
    from transferscope.errors import TransferscopeWarning

    train, test = toy_data()
    threads(2)
    reference = fresh()
    ref = Trainer(SPEC, "multiclass", seed=1).fit(reference, train, test)
    assert ref.threads == 2
    threads(1)
    one = fresh()
    assert Trainer(SPEC, "multiclass", seed=1).fit(one, train, test).threads == 1
    if torch.equal(one.fc.weight, reference.fc.weight):
        pytest.skip("1 and 2 threads give the same weights on this machine: nothing to tell apart")
    run_dir = tmp_path / "run"
    threads(2)
    interrupt_at(9, run_dir, train, test)
    threads(1)
    resumed = fresh()
    with pytest.warns(TransferscopeWarning, match="resumes with the 2 torch threads it started"):
        out = Trainer(SPEC, "multiclass", seed=1, run_dir=run_dir).fit(resumed, train, test)
    assert out.threads == 2 and torch.get_num_threads() == 1  # this process's count is back
    assert_same_weights(resumed, reference)


ADAMW = SPEC.model_copy(
    update={
        "optimizer": "adamw",
        "lr": 3e-3,
        "weight_decay": 0.05,
        "warmup_epochs": 1.5,
        "layer_decay": 0.7,
    }
)


def tiny_vit():
    from transferscope.models import build_model

    torch.manual_seed(0)
    return build_model(
        "timm:vit_tiny_patch16_224",
        4,
        1,
        img_size=8,
        patch_size=4,
        embed_dim=8,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
    )


@pytest.mark.usefixtures("one_thread")
def test_interrupted_adamw_run_resumes_to_identical_weights_and_moments(tmp_path):
    """AdamW with warmup and layer decay on a small ViT, stopped inside the warmup and inside an
    epoch: a fresh trainer and model (nothing kept in memory, as after a SIGKILL) end on the same
    weights and evaluations as a run never stopped, from a resume file that holds both moments
    and the step count of every parameter."""
    stop_at = 5  # the warmup lasts 9 steps, an epoch 6
    train, test = toy_data()
    reference = tiny_vit()
    ref = Trainer(ADAMW, "multiclass", seed=1).fit(reference, train, test)
    run_dir = tmp_path / "run"
    interrupt_at(stop_at, run_dir, train, test, spec=ADAMW, model=tiny_vit)
    _, saved, info = ckpt.load_resume(run_dir / "checkpoints" / paths.RESUME)
    # Saved before the step that was interrupted.
    assert info["step"] == stop_at - 1
    assert {k.partition("/")[0] for k in saved} == {"exp_avg", "exp_avg_sq", "step"}
    assert float(saved["step/head.weight"]) == stop_at - 1
    resumed = tiny_vit()
    torch.nn.init.normal_(resumed.head.weight)  # the weights must come from the resume file
    out = Trainer(ADAMW, "multiclass", seed=1, run_dir=run_dir).fit(resumed, train, test)
    assert_same_weights(resumed, reference)
    assert [r["metric"] for r in out.history] == [r["metric"] for r in ref.history]


def test_a_resume_file_with_momentum_buffers_of_the_earlier_format_still_resumes(tmp_path):
    """Resume files written before the whole optimizer state was kept hold SGD's buffers as
    momentum/<name>: a run stopped then resumes to the same weights."""
    train, test = toy_data()
    reference = fresh()
    Trainer(SPEC, "multiclass", seed=1).fit(reference, train, test)
    run_dir = tmp_path / "run"
    interrupt_at(9, run_dir, train, test)
    path = run_dir / "checkpoints" / paths.RESUME
    tensors = ckpt.load_weights(path)
    meta = ckpt.read_metadata(path)
    old = {k.replace("optimizer/momentum_buffer/", "momentum/"): v for k, v in tensors.items()}
    assert any(k.startswith("momentum/") for k in old)
    ckpt.save_weights(path, old, meta=meta)
    resumed = fresh()
    Trainer(SPEC, "multiclass", seed=1, run_dir=run_dir).fit(resumed, train, test)
    assert_same_weights(resumed, reference)


def test_multilabel_reports_per_task_auc():
    train, test = toy_data(n=200, multilabel=True)
    spec = TrainSpec(epochs=5, batch_size=16, lr=0.1)
    result = Trainer(spec, "multilabel", seed=0).fit(fresh(outputs=2), train, test)
    assert result.final.metric_name == "mean_auc"
    assert len(result.final.per_task) == 2
    assert result.final.metric > 0.7


def test_auc_matches_definition_and_handles_single_class_task():
    outputs = torch.tensor([[0.1, 0.0], [0.9, 0.0], [0.4, 0.0], [0.8, 0.0]])
    targets = torch.tensor([[0, 1], [1, 1], [1, 1], [0, 1]]).float()
    aucs = per_task_auc(outputs, targets)
    # Positive scores {0.9, 0.4} vs negative {0.1, 0.8}: 3 of 4 pairs ordered correctly.
    assert aucs[0] == pytest.approx(0.75)
    assert math.isnan(aucs[1])
    assert score("multilabel", outputs, targets).metric == pytest.approx(0.75)


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_scikit_learn_with_ties_and_any_class_balance(seed):
    """per_task_auc against scikit-learn's roc_auc_score (the independent formulation): scores
    rounded so that many tie, within and across classes, and columns from 1 positive to 1
    negative; the pair-counting definition checked on the first column too."""
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(seed)
    n = 60
    outputs = torch.round(torch.randn(n, 6, generator=g) * 3) / 3  # few distinct values
    targets = torch.rand(n, 6, generator=g) < torch.tensor([0.5, 0.1, 0.9, 0.3, 0.5, 0.5])
    targets = targets.float()
    targets[:, 4] = 0
    targets[seed, 4] = 1  # a single positive
    targets[:, 5] = 1
    targets[seed, 5] = 0  # a single negative
    aucs = per_task_auc(outputs, targets)
    for k in range(6):
        expected = roc_auc_score(targets[:, k].numpy(), outputs[:, k].numpy())
        assert aucs[k] == pytest.approx(expected, abs=1e-12), k
    pos, neg = outputs[targets[:, 0] == 1, 0], outputs[targets[:, 0] == 0, 0]
    pairs = (pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()
    assert aucs[0] == pytest.approx(pairs.mean().item(), abs=1e-6)


def test_divergence_names_epoch_and_step():
    train, test = toy_data()
    spec = TrainSpec(epochs=2, batch_size=16, lr=1e6, momentum=0.0)
    with pytest.raises(DivergedError, match=r"diverged.*epoch \d+, step \d+"):
        Trainer(spec, "multiclass").fit(fresh(), train, test)


def test_scalar_parameters_train_at_a_tenth_of_lr():
    opt = make_optimizer(fresh(), TrainSpec(lr=0.2))
    factors = sorted(g["lr_factor"] for g in opt.param_groups)
    assert factors == [0.1, 1.0]
    scalar_group = next(g for g in opt.param_groups if g["lr_factor"] == 0.1)
    assert [p.numel() for p in scalar_group["params"]] == [1]


def test_schedules():
    spec = TrainSpec(epochs=10, lr=1.0, schedule="multistep", milestones=[3, 6], gamma=0.1)
    assert [lr_at(spec, e) for e in (0, 2.9, 3, 6.5)] == pytest.approx([1, 1, 0.1, 0.01])
    cos = TrainSpec(epochs=10, lr=1.0, schedule="cosine")
    assert (
        lr_at(cos, 0) == 1
        and lr_at(cos, 5) == pytest.approx(0.5)
        and lr_at(cos, 10) == pytest.approx(0)
    )
    scaled = TrainSpec(lr=0.1, batch_size=32, scale_lr_by_batch=True)
    assert lr_at(scaled, 0) == pytest.approx(0.1 * 32 / 256)


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(TransferscopeError, match="unknown device"):
        pick_device("tpu:0")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(TransferscopeError, match=r"bad\.safetensors"):
        ckpt.load_weights(path)


def test_finished_but_unmarked_run_does_not_retrain(tmp_path):
    # A crash after fit but before the study writes DONE: the rerun must not train again.
    train, test = toy_data()
    first = fresh()
    Trainer(SPEC, "multiclass", seed=2, run_dir=tmp_path, keep_resume=True).fit(first, train, test)
    assert (tmp_path / "checkpoints" / paths.RESUME).exists()
    steps = []
    again = fresh()
    trainer = Trainer(
        SPEC, "multiclass", seed=2, run_dir=tmp_path, on_step=lambda s, t: steps.append(s)
    )
    trainer.fit(again, train, test)
    assert steps == []
    assert all(torch.equal(again.state_dict()[k], v) for k, v in first.state_dict().items())
    assert not (tmp_path / "checkpoints" / paths.RESUME).exists()


def test_a_failed_write_keeps_the_previous_checkpoint_and_names_the_file(tmp_path, monkeypatch):
    """A full disk mid-run: the error names the file, earlier files stay valid, a rerun resumes."""
    import errno

    train, test = toy_data()
    reference = fresh()
    Trainer(SPEC, "multiclass", seed=1).fit(reference, train, test)

    save_file = ckpt.save_file
    calls = []

    def full_disk(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 4:  # the resume point after epoch 1 (after epoch-0, -0.25 and -1)
            with open(filename, "wb") as f:
                f.write(b"\0" * 10)  # part of the file made it to disk
            raise OSError(errno.ENOSPC, "No space left on device")
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    run_dir = tmp_path / "run"
    with pytest.raises(TransferscopeError) as err:
        Trainer(SPEC, "multiclass", seed=1, run_dir=run_dir, resume_every_s=1e9).fit(
            fresh(), train, test
        )
    message = str(err.value)
    assert isinstance(err.value, DiskFullError)
    assert (
        f"no space left on the device to write {run_dir / 'checkpoints' / paths.RESUME}" in message
    )
    assert "free there; the file alone takes" in message and "previous version" in message
    assert "rerun the same command to resume" in message
    assert not list(run_dir.rglob("*.tmp"))
    assert not (run_dir / "checkpoints" / paths.RESUME).exists()
    for name in ("epoch-0", "epoch-0.25", "epoch-1"):
        ckpt.load_weights(run_dir / "checkpoints" / f"{name}.safetensors")

    monkeypatch.setattr(ckpt, "save_file", save_file)
    resumed = fresh()
    Trainer(SPEC, "multiclass", seed=1, run_dir=run_dir).fit(resumed, train, test)
    assert_same_weights(resumed, reference)


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        # How the OS says it, and how safetensors does (its own error type, not an OSError).
        (OSError(28, "No space left on device"), "no space left on the device to write"),
        (
            SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            ),
            "no space left on the device to write",
        ),
        (PermissionError(13, "Permission denied"), "cannot write"),
    ],
)
def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch, error, needle):
    path = tmp_path / "w.safetensors"
    old = {"w": torch.ones(3)}
    ckpt.save_weights(path, old)

    def fail(tensors, filename, metadata=None):
        raise error

    monkeypatch.setattr(ckpt, "save_file", fail)
    with pytest.raises(TransferscopeError) as err:
        ckpt.save_weights(path, {"w": torch.zeros(3)})
    assert f"{needle} {path}" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, DiskFullError) == needle.startswith("no space")
    assert torch.equal(ckpt.load_weights(path)["w"], old["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_channels_last_on_the_cpu_is_a_clear_error_not_a_crash():
    from transferscope.models import build_model

    torch.manual_seed(0)
    model = build_model("fixup-small", 10, 1, widths=[4, 4, 4])
    data = TensorImageDataset(torch.randn(8, 1, 28, 28), torch.arange(8) % 10)
    spec = TrainSpec(epochs=1, batch_size=4)
    with pytest.raises(TransferscopeError, match="channels_last"):
        Trainer(spec, "multiclass", channels_last=True).fit(model, data, data)


def test_cpu_evaluation_forwards_at_most_a_chunk_of_examples_with_the_same_outputs():
    """Evaluation batches (1000 by default) run through the model 256 rows at a time on the CPU,
    which keeps activations in the caches; the outputs are those of one whole-batch forward."""
    from transferscope.models import build_model
    from transferscope.training.loaders import CPU_FORWARD_ROWS
    from transferscope.training.metrics import predict

    torch.manual_seed(0)
    model = build_model("fixup-small", 10, 1, widths=[8, 16, 16], stem_stride=2).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    x = torch.randn(600, 1, 28, 28)
    seen = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    outputs, _ = predict(model, TensorImageDataset(x, torch.zeros(600).long()), batch_size=600)
    assert seen == [CPU_FORWARD_ROWS, CPU_FORWARD_ROWS, 600 - 2 * CPU_FORWARD_ROWS]
    with torch.no_grad():
        assert torch.equal(outputs, model(x))
