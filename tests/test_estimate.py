"""The cost estimate (transferscope estimate, run --plan-only): sizes, counts and hours."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from transferscope import config
from transferscope.errors import TransferscopeError
from transferscope.study import estimate as est
from transferscope.studydir.inputs import DataCache

from study_checks import invoke


def small_config(tmp_path) -> config.StudyConfig:
    return config.from_dict(
        {
            "source": {"name": "digits", "id": "src"},
            "targets": [{"name": "digits", "options": {"test_fraction": 0.5}}],
            "model": {"name": "fixup-small"},
            "pretrain": {"epochs": 2, "batch_size": 64},
            "finetune": {"epochs": 3, "batch_size": 32, "eval_points": [0.5]},
            "randinit": {"epochs": 4, "batch_size": 32},
            "seeds": [0, 1],
            "trajectory": {"checkpoints": [1]},
            "output": str(tmp_path / "study"),
        }
    )


def fake_calibration(name, shape, outputs, batch, eval_batch, device, steps, bf16, **kw):
    """1 ms per training image at batch 64 (P), 2 ms at 32; evaluation a tenth of that."""
    train = 1e-3 if batch == 64 else 2e-3
    return est.Calibration(train, train / 10, batch, eval_batch)


def fake_side_rates(model, image_shape, device):
    """1 ns per CKA multiply-add, 10 ms per model loaded, 5 ms per AUC, 1 ms per model call."""
    return 1e-9, 1e-2, 5e-3, 1e-3


def test_counts_examples_and_hours_follow_the_plan(tmp_path):
    cfg = small_config(tmp_path)
    cache = DataCache()
    result = est.estimate(
        cfg, cache.get, est.torch.device("cpu"), calibrate_fn=fake_calibration,
        side_fn=fake_side_rates,
    )  # fmt: skip
    src, tgt = cache.get(cfg.source), cache.get(cfg.targets[0])
    n_src, n_tgt, t_tgt = len(src.train), len(tgt.train), len(tgt.test)
    assert result.runs == {"P": 1, "P-T": 2, "RI-T": 3, "P@k-T": 3}
    assert result.examples["P"]["train"] == 2 * n_src
    # P-T: 3 epochs each; evaluated at epochs 0..3 and at 0.5.
    assert result.examples["P-T"] == {"train": 2 * 3 * n_tgt, "eval": 2 * 5 * t_tgt}
    assert result.examples["RI-T"]["train"] == 3 * 4 * n_tgt
    p_hours = (2 * n_src * 1e-3 + 3 * len(src.test) * 1e-4) / 3600
    assert result.hours["P"] == pytest.approx(p_hours)
    assert result.hours["RI-T"] == pytest.approx((12 * n_tgt * 2e-3 + 3 * 5 * t_tgt * 2e-4) / 3600)
    assert result.analyses_hours > 0 and all(v >= 0 for v in result.analyses_forwards.values())
    lines = est.format_estimate(result)
    assert any(line.strip().startswith("RI-T") and " 3 runs" in line for line in lines)
    done = est.estimate(
        cfg, cache.get, est.torch.device("cpu"), is_done=lambda rid: rid.startswith("RIT"),
        calibrate_fn=fake_calibration, side_fn=fake_side_rates,
    )  # fmt: skip
    assert done.runs_to_train["RI-T"] == 0 and done.hours["RI-T"] == 0
    assert done.total_hours < result.total_hours
    assert done.analyses_hours == result.analyses_hours  # the analyses read every run


def test_analysis_rates_time_the_work_with_the_threads_it_runs_with():
    """One thread: CPU seconds per unit of work, each a positive, plausible number, scaled by the
    share of a core a worker can expect (in (0, 1]); the caller's thread count comes back."""
    model = est.timing_model("fixup-small", (1, 8, 8), 10, est.torch.device("cpu"))
    threads = est.torch.get_num_threads()
    rates = est.analysis_rates(model, (1, 8, 8), est.torch.device("cpu"), threads=1, repeats=1)
    assert est.torch.get_num_threads() == threads and rates.threads == 1
    assert 0 < rates.share <= 1
    assert 0 < rates.forward_s < rates.train_s < 1 and 0 < rates.multiply_add_s < 1e-7
    assert 0 < rates.model_s < 5 and 0 < rates.auc_s < 5
    alone = est.analysis_rates(
        model, (1, 8, 8), est.torch.device("cpu"), threads=1, repeats=1, share=False
    )
    assert alone.share == 1.0
    assert 0 < rates.call_s < 5
    work = est.Work(forwards=1000, train=10, multiply_adds=1e6, models=2, aucs=3, calls=4)
    expected = (
        1000 * rates.forward_s + 10 * rates.train_s + 1e6 * rates.multiply_add_s
        + 2 * rates.model_s + 3 * rates.auc_s + 4 * rates.call_s
    )  # fmt: skip
    assert rates.seconds(work) == pytest.approx(expected)
    assert (work * 2).passes == 2 * work.passes == 2 * (1000 + 30)


def test_data_not_here_is_sized_from_options_or_examples(tmp_path):
    data = config.preset_dict("domainnet")
    data["source"]["root"] = data["targets"][0]["root"] = str(tmp_path / "absent")
    cfg = config.from_dict(data)
    cache = DataCache()
    with pytest.raises(TransferscopeError, match=r"--examples imagenet=TRAIN/TEST"):
        est.estimate(cfg, cache.get, est.torch.device("cpu"), calibrate_fn=fake_calibration)
    given = est.parse_examples(["imagenet=1281167/50000"])
    result = est.estimate(
        cfg, cache.get, est.torch.device("cpu"), given=given, calibrate_fn=fake_calibration
    )
    assert result.sizes["imagenet"].train == 1_281_167
    assert result.sizes["domainnet-real"].origin == "options"
    assert result.sizes["domainnet-real"].train == 50_000
    assert result.examples["P"]["train"] == 90 * 1_281_167


@pytest.mark.parametrize("bad", ["imagenet", "imagenet=", "imagenet=-3", "x=10/zero", "=5"])
def test_bad_examples_say_the_format(bad):
    with pytest.raises(TransferscopeError, match="LABEL=TRAIN/TEST"):
        est.parse_examples([bad])


def test_calibration_times_a_real_model_on_the_cpu():
    cal = est.calibrate("fixup-small", (1, 16, 16), 10, 64, 64, est.torch.device("cpu"), steps=1)
    assert cal.batch == 8  # capped on the CPU
    # Positive and per image, not per batch (timings on a shared machine are too noisy to order).
    assert 0 < cal.eval_s < 1 and 0 < cal.train_s < 1


def test_cli_estimate_prints_runs_by_kind_and_hours(tmp_path):
    cfg = small_config(tmp_path).model_dump(mode="json")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))

    def estimate(*args: str) -> subprocess.CompletedProcess[str]:
        return invoke("estimate", str(path), *args)

    proc = estimate("--steps", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "runs by kind (9 in all)" in out and "device-hours on cpu" in out
    assert "analyses:" in out and "calibration (fixup-small" in out
    bad = estimate("-e", "nope")
    assert bad.returncode == 2 and "LABEL=TRAIN/TEST" in bad.stderr
