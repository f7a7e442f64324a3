"""Domain similarity: the distances against closed forms, their order on constructed domains
seen by a really trained P, the unit on a study, and claim C11 across targets."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.linalg
import torch
from typer.testing import CliRunner

from test_findings_rules import cmp, curves, gap, run_row, shuffled, side, unshuffled
from transferscope import registry
from transferscope.cli import app
from transferscope.data.base import TensorImageDataset
from transferscope.data.shuffle import shuffle_images
from transferscope.measures import domain as D
from transferscope.report import build_report, evaluate_findings, load_study
from transferscope.report.findings import ACROSS_TARGETS, StudyData
from transferscope.studydir.plan import build_plan
from transferscope.studydir.store import StudyStore
from transferscope.unitkit.rules import FAILS, HOLDS, INCONCLUSIVE, UNMEASURED

from conftest import requires_fashion
from fake_study import INFO, FakeData, fake_config, write_runs

# ---------------------------------------------------------------------------------------------
# the math


def _cov(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


# Tolerances from float64's conditioning, not from what one CPU happened to give: BLAS and LAPACK
# sum in an order that depends on the CPU's vector width and the library build, so a result is
# only defined up to the rounding error analysis of the operations that compute it.
EPS = float(np.finfo(np.float64).eps)


def _sample_tolerance(*samples: np.ndarray) -> float:
    """What float64 rounding allows the Fréchet distance of samples of d features, computed
    from their factors (domain.py): products whose inner dimension is at most d and an SVD of
    size at most d, each accurate to about d·ε times the size of what it combines (Higham,
    Accuracy and Stability of Numerical Algorithms, §3.5 and §20), here bounded by the samples'
    mean squared row norms (‖μ‖² + tr Σ each, which also bounds ‖μ_a − μ_b‖²); that once more
    for the rounding of the samples themselves (a rotation's product, a shift). Hence d²·ε·S."""
    d = samples[0].shape[1]
    scale = sum(float((s * s).sum(axis=1).mean()) for s in samples)
    return d * d * EPS * scale


def _moment_tolerance(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """What float64 rounding allows the Fréchet distance from moments: a covariance known to
    ‖E‖ ≤ d·ε·‖Σ‖₂ (its own rounding and its eigen-decomposition's) has a square root known only
    to ‖E‖^½ (‖A^½ − B^½‖₂ ≤ ‖A − B‖₂^½ for positive semi-definite A, B; Bhatia, Matrix
    Analysis, X.1), so the nuclear norm of d×d products moves by d·(‖E‖·‖Σ_other‖₂)^½, twice
    in the distance: √ε-sized, 1e-8 relative, where a covariance is singular."""
    d = cov_a.shape[0]
    norms = float(np.linalg.norm(cov_a, 2) * np.linalg.norm(cov_b, 2))
    return 2.0 * d * math.sqrt(d * EPS * norms)


def test_frechet_of_diagonal_gaussians_has_its_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = D.frechet_from_moments(mu_a, np.diag(a), mu_b, np.diag(b))
    # Full rank with eigenvalues >= 0.1 of at most 3: square roots are well conditioned, and
    # every step is accurate to a few d·ε of the terms' size.
    scale = ((mu_a - mu_b) ** 2).sum() + a.sum() + b.sum()
    assert got == pytest.approx(expected, rel=0, abs=25 * EPS * scale)


def test_frechet_matches_scipy_sqrtm_on_full_rank_covariances() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        s1, s2 = _cov(rng, 6), _cov(rng, 6)
        mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
        # FID's formulation: the square root of the non-symmetric product.
        root = scipy.linalg.sqrtm(s1 @ s2).real
        fid = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root)
        # Both are first-order accurate on full-rank covariances: an eigenvalue λ known to
        # d·ε·‖Σ‖ has √λ known to d·ε·κ(Σ)·√λ / 2, so each method errs by about d²·ε·κ·(size of
        # the terms); the random covariances here have condition numbers up to 2e4.
        kappa = max(np.linalg.cond(s1), np.linalg.cond(s2))
        scale = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
        tolerance = 2 * 36 * EPS * kappa * scale
        assert D.frechet_from_moments(mu1, s1, mu2, s2) == pytest.approx(fid, rel=0, abs=tolerance)


def test_frechet_is_exact_for_a_rank_one_covariance() -> None:
    """Σ_a = v vᵀ: Σ_a^½ = v vᵀ/‖v‖ and tr((Σ_a^½ Σ_b Σ_a^½)^½) = sqrt(vᵀ Σ_b v)."""
    rng = np.random.default_rng(2)
    v = rng.normal(size=8)
    s1, s2 = np.outer(v, v), _cov(rng, 8, rank=2)  # both singular
    mu = np.zeros(8)
    expected = np.trace(s1) + np.trace(s2) - 2 * math.sqrt(v @ s2 @ v)
    # From moments, a singular covariance's rounding is amplified to √ε (_moment_tolerance).
    tolerance = _moment_tolerance(s1, s2)
    assert tolerance < 1e-5 * expected  # still a test of the formula, not of nothing
    assert D.frechet_from_moments(mu, s1, mu, s2) == pytest.approx(expected, rel=0, abs=tolerance)
    assert D.frechet_from_moments(mu, s2, mu, s1) == D.frechet_from_moments(mu, s1, mu, s2)


def _exact_frechet_of_samples(x: np.ndarray, y: np.ndarray) -> float:
    """The Fréchet distance of the samples' Gaussians in 40-digit arithmetic (mpmath): the
    nonzero eigenvalues of Σ_x Σ_y are the squared singular values of X_c Y_cᵀ / √((n−1)(m−1))
    (X_c, Y_c the centred samples), and 40 digits leave no doubt about the float64 answer."""
    import mpmath

    with mpmath.workdps(40):

        def centred(a: np.ndarray) -> tuple[list, Any]:
            rows = [[mpmath.mpf(float(v)) for v in row] for row in a]
            mean = [mpmath.fsum(col) / len(rows) for col in zip(*rows, strict=True)]
            return mean, mpmath.matrix(
                [[v - m for v, m in zip(row, mean, strict=True)] for row in rows]
            )

        (mx, cx), (my, cy) = centred(x), centred(y)
        n, m = len(x), len(y)
        singular = mpmath.svd_r(cx * cy.T, compute_uv=False)
        cross = mpmath.fsum(singular) / mpmath.sqrt((n - 1) * (m - 1))
        tx = mpmath.fsum(v**2 for v in cx) / (n - 1)
        ty = mpmath.fsum(v**2 for v in cy) / (m - 1)
        means = mpmath.fsum((a - b) ** 2 for a, b in zip(mx, my, strict=True))
        return float(means + tx + ty - 2 * cross)


def test_frechet_and_mmd_properties_on_samples() -> None:
    rng = np.random.default_rng(3)
    # Fewer examples than features: singular covariances, as at a wide penultimate layer.
    x, y = rng.normal(size=(30, 40)), rng.normal(1.0, 2.0, size=(25, 40))
    value = D.frechet_distance(x, y)
    # Against the distance in 40-digit arithmetic: accurate to float64 rounding of its terms
    # (an eigenvalue-based square root of the singular product was off by 5e-9 relative).
    assert value == pytest.approx(
        _exact_frechet_of_samples(x, y), rel=0, abs=_sample_tolerance(x, y)
    )
    assert D.frechet_distance(x, x) == pytest.approx(0.0, abs=_sample_tolerance(x, x))
    # Symmetric by construction: the same operations in either order, so the same bits.
    assert D.frechet_distance(y, x) == value
    q, _ = np.linalg.qr(rng.normal(size=(40, 40)))  # an orthogonal rotation of the features
    shift = rng.normal(size=40)
    moved_x, moved_y = x @ q + shift, y @ q + shift
    moved = D.frechet_distance(moved_x, moved_y)
    assert moved == pytest.approx(value, rel=0, abs=_sample_tolerance(moved_x, moved_y))
    sigma = D.median_bandwidth(x)
    mmd, _ = D.mmd_rbf(x, y, sigma)

    # A kernel value exp(−γ‖a−b‖²) carries the rounding of ‖a‖² + ‖b‖² − 2a·b, at most about
    # d·ε·(‖a‖² + ‖b‖²), times γ = 1/(2σ²); the means over n·m values add n·m·ε at most.
    def mmd_tolerance(a: np.ndarray, b: np.ndarray) -> float:
        rows = np.concatenate([a, b])
        biggest = 2 * float((rows * rows).sum(axis=1).max())
        return 4 * EPS * (a.shape[1] * biggest / (2 * sigma**2) + len(a) * len(b))

    assert D.mmd_rbf(moved_x, moved_y, sigma)[0] == pytest.approx(
        mmd, rel=0, abs=mmd_tolerance(moved_x, moved_y)
    )
    assert D.mmd_rbf(y, x, sigma)[0] == pytest.approx(mmd, rel=0, abs=mmd_tolerance(x, y))


def test_mmd_against_its_definition_and_its_null() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(12, 3)), rng.normal(0.5, 1.0, size=(9, 3))
    sigma = 1.3

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma**2))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    assert D.mmd_rbf(x, y, sigma)[0] == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    # The median heuristic over the pooled rows, as documented.
    pooled = np.concatenate([x, y])
    dists = [np.linalg.norm(a - b) for i, a in enumerate(pooled) for b in pooled[i + 1 :]]
    assert D.mmd_rbf(x, y)[1] == pytest.approx(float(np.median(dists)), rel=1e-10)
    # Two samples of one distribution: about 0 (unbiased), far below a shifted sample's.
    a, b = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    same, _ = D.mmd_rbf(a, b)
    shifted, _ = D.mmd_rbf(a, b + 1.0)
    assert abs(same) < 0.01 < shifted


def test_sample_frechet_converges_to_the_gaussians_distance() -> None:
    rng = np.random.default_rng(5)
    s1, s2 = _cov(rng, 4), _cov(rng, 4)
    mu1, mu2 = np.zeros(4), np.full(4, 0.5)
    exact = D.frechet_from_moments(mu1, s1, mu2, s2)
    x = rng.multivariate_normal(mu1, s1, size=20000)
    y = rng.multivariate_normal(mu2, s2, size=20000)
    assert D.frechet_distance(x, y) == pytest.approx(exact, rel=0.05)


def test_bad_shapes_are_named() -> None:
    with pytest.raises(Exception, match="x has 3 features and y 4"):
        D.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(Exception, match="at least 2 examples"):
        D.mmd_rbf(np.zeros((1, 3)), np.zeros((5, 3)))


# ---------------------------------------------------------------------------------------------
# constructed domains, seen by a really trained P


@pytest.fixture(scope="module")
def trained_p() -> tuple[torch.nn.Module, torch.Tensor]:
    """fixup-small trained for 300 steps on Fashion-MNIST train images; and 1,000 test images
    it never saw."""
    from transferscope.data import fashion_mnist
    from transferscope.models import build_model

    arrays = fashion_mnist.load_arrays()
    g = np.random.default_rng(0)
    idx = g.permutation(60000)[:6000]
    x = fashion_mnist.to_tensor(arrays["train_images"][idx])
    y = torch.from_numpy(arrays["train_labels"][idx].astype(np.int64))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("fixup-small", 10, 1, widths=[8, 16, 16], stem_stride=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    try:
        for _ in range(300):
            batch = torch.from_numpy(g.integers(0, len(x), 64))
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    test = fashion_mnist.to_tensor(arrays["test_images"][g.permutation(10000)[:1000]])
    return model, test


@requires_fashion
def test_the_order_of_constructed_domains(trained_p) -> None:
    """Held-out source images are nearest, then the same images block-shuffled, then white
    noise; and flipped upside down < pixel-shuffled (both measures). Pixel shuffling and noise
    are about equally far for P (their order changes with the seeds), so the shuffled copy
    that fixes near < shuffled < noise is the block-shuffled one."""
    model, test = trained_p
    n = 400
    source, held = test[:n], test[n : 2 * n]
    perm = torch.randperm(784, generator=torch.Generator().manual_seed(0))
    domains = {
        "held-out": held,
        "flipped": torch.flip(held, (2,)),
        "pixel-shuffled": held.flatten(1)[:, perm].reshape(held.shape),
        "block-shuffled": shuffle_images(held, "block", 0, 7),
        "noise": torch.randn(held.shape, generator=torch.Generator().manual_seed(1)),
    }

    def feats(images: torch.Tensor) -> np.ndarray:
        data = TensorImageDataset(images, torch.zeros(len(images), dtype=torch.long))
        return D.penultimate_features(model, data, batch_size=128)

    src = feats(source)
    assert src.shape == (n, 16)  # the input of the head: widths[-1] pooled features
    sigma = D.median_bandwidth(src)
    fd = {k: D.frechet_distance(src, feats(v)) for k, v in domains.items()}
    mmd = {k: D.mmd_rbf(src, feats(v), sigma)[0] for k, v in domains.items()}
    print({k: round(v, 3) for k, v in fd.items()}, {k: round(v, 4) for k, v in mmd.items()})
    for d in (fd, mmd):
        # near < shuffled < noise: 7-px blocks keep the strokes P's features respond to, noise
        # keeps nothing (measured 0.56 < 21.9 < 31.3 Fréchet, 0.001 < 0.14 < 0.18 MMD²)
        assert d["held-out"] < d["block-shuffled"] < d["noise"], d
        assert d["held-out"] < d["flipped"] < d["pixel-shuffled"], d
        assert d["noise"] > d["flipped"], d
    # The held-out images are within sampling noise of the source: far nearer than any change.
    assert fd["held-out"] < 0.2 * fd["flipped"]


# ---------------------------------------------------------------------------------------------
# the unit on a study


class ShiftedData(FakeData):
    """The fake study's random images, shifted by an amount per data set: 'far' is far."""

    SHIFT: ClassVar[dict[str, float]] = {"src": 0.0, "near": 0.3, "mid": 1.0, "far": 3.0}

    def get(self, spec):
        splits = super().get(spec)
        shift = self.SHIFT.get(spec.label, 0.0)
        data = TensorImageDataset(splits.train.images + shift, splits.train.targets)
        return type(splits)(info=splits.info, train=data, test=data)


def _three_target_study(tmp_path: Path) -> StudyStore:
    digits = {"name": "digits", "options": {"image_size": 8}}
    targets = [{**digits, "id": label} for label in ("far", "near", "mid")]
    cfg = fake_config(targets=targets, shuffles={"block_sizes": [4]})
    plan = build_plan(cfg, {"src": INFO, **{t["id"]: INFO for t in targets}})
    store = StudyStore(tmp_path / "study")
    store.write_study(cfg, plan)
    write_runs(store, plan)
    return store


def test_analyze_only_domain_on_an_existing_study(tmp_path: Path, monkeypatch) -> None:
    """`transferscope analyze --only domain` reads P's weights and the data, trains nothing."""
    store = _three_target_study(tmp_path)
    weights = {p: p.stat().st_mtime_ns for p in store.root.rglob("*.safetensors")}
    monkeypatch.setattr("transferscope.study.analyze.DataCache", lambda *a, **k: ShiftedData())
    result = CliRunner().invoke(app, ["analyze", str(store.root), "--only", "domain"])
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in store.root.rglob("*.safetensors")} == weights
    doc = json.loads((store.root / "analyses" / "domain.json").read_text())
    assert doc["status"] == "ok" and doc["measure"] == "frechet" and doc["layer"] == "fc"
    p_id = next(r.id for r in store.read_plan().runs if r.spec.kind == "P")
    assert doc["runs_used"] == [p_id]
    t = doc["targets"]
    assert t["near"]["examples"] == t["far"]["examples"] == 40
    # A larger shift of the same images is further away in P's features, by both measures.
    for key in ("frechet", "mmd"):
        assert t["near"][key] < t["mid"][key] < t["far"][key], key
    assert not (store.root / "analyses" / "curves.json").exists()  # nothing else ran
    # The fake source has 40 test images: no room for a second disjoint subset of 40.
    assert doc["source_floor"] is None


def _domain_doc(distances: dict[str, float], measure: str = "frechet") -> dict[str, Any]:
    return {
        "analysis": "domain",
        "version": registry.get("domain").version,
        "status": "ok",
        "measure": measure,
        "targets": {
            t: {"frechet": d, "mmd": d / 100, "examples": 500, "run": "P-0"}
            for t, d in distances.items()
        },
    }


def _interval(estimate: float, se: float) -> dict[str, Any]:
    """A stored bootstrap comparison whose 95% interval is estimate ± 1.96 se."""
    half = 1.959964 * se
    return cmp(1, estimate, low=estimate - half, high=estimate + half)


def _curves_entry(
    target: str, gain: float, lost: float, beats: int = 1, se: float | None = 0.2
) -> dict[str, Any]:
    """A target's curves entry: headroom gain ``gain`` hundredths unshuffled (P-T 0.9, RI-T set
    to give it), ``gain - lost`` at b1, both with standard error ``se`` hundredths (None: no
    interval stored)."""
    g, lost_, se_ = gain / 100, lost / 100, None if se is None else se / 100
    rit = (0.9 - g) / (1 - g)  # (0.9 - rit) / (1 - rit) = g
    runs = {"P-T": [f"PT-{target}"], "RI-T": [f"RIT-{target}"]}
    test = cmp(1, lost_) if se_ is None else _interval(lost_, se_)
    small = {**shuffled(cmp(1, 1.0), [1], [3]), "gain_test": test, "runs": runs}
    entry = curves(
        cmp(beats, 0.05, p=1e-4 if beats else 0.5),
        [1],
        [3],
        shuffles=[{**unshuffled(gain), "runs": runs}, small],
    )
    entry.update(gap(side(0.9, [1]), side(rit, [3]), 0.8, gain), runs=runs)
    entry["speed_gap_epochs"] = gain / 2
    if se_ is not None:
        entry["gain_interval"] = _interval(g, se_)
    return entry


def _study(
    distances: dict[str, float],
    drops: dict[str, tuple[float, float]],
    beats: int = 1,
    p_at_chance: bool = False,
    measure: str = "frechet",
    se: float | None = 0.2,
    floor: float | None = None,
) -> StudyData:
    docs: dict[str, Any] = {name: None for name in registry.names()}
    domain = {**_domain_doc(distances, measure), "source_floor": floor}
    docs["domain"] = registry.get("domain").Result.model_validate(domain)
    targets = {t: _curves_entry(t, *drops[t], beats=beats, se=se) for t in drops}
    docs["curves"] = registry.get("curves").Result.model_validate(
        {"analysis": "curves", "version": 4, "status": "ok", "targets": targets}
    )
    rows = [run_row("P-0", "P", chance=p_at_chance)]
    for t in distances:
        for kind, prefix in (("P-T", "PT"), ("RI-T", "RIT")):
            rows.append(dataclasses.replace(run_row(f"{prefix}-{t}", kind), target=t))
    return StudyData(Path("."), "", {}, rows, docs)


def c11(data: StudyData):
    return {f.id: f for f in evaluate_findings(data)}["C11"]


NEAR_TO_FAR = {"a": 1.0, "b": 2.0, "c": 5.0, "d": 9.0}
THREE = {t: NEAR_TO_FAR[t] for t in "abc"}


def test_c11_holds_when_benefit_and_shuffle_loss_fall_with_distance() -> None:
    drops = {"a": (8.0, 6.0), "b": (6.0, 4.0), "c": (3.0, 2.0), "d": (1.0, 0.5)}
    found = c11(_study(NEAR_TO_FAR, drops))
    assert found.verdict == HOLDS, found.measured
    # One row, one verdict across targets, naming the order and the test.
    assert [t.target for t in found.per_target] == [ACROSS_TARGETS]
    row = found.per_target[0]
    assert "a 1 < b 2 < c 5 < d 9" in row.measured and "ρ = -1.00" in row.measured
    assert "headroom gain 0.08 ± 0.002" in row.measured
    assert "sign over 2000 redraws" in row.statistic and "other sign in 0" in row.statistic
    # Ranked by the measure the result names: MMD gives the same order here.
    assert c11(_study(NEAR_TO_FAR, drops, measure="mmd")).verdict == HOLDS
    assert "MMD²" in c11(_study(NEAR_TO_FAR, drops, measure="mmd")).measured


def test_c11_decides_with_three_targets() -> None:
    """Three targets whose values are ordered far beyond their noise: the order decides (a
    permutation test could not: its p is at least 1/6 on three values)."""
    falls = {"a": (9.0, 5.0), "b": (6.0, 4.0), "c": (3.0, 3.0)}
    assert c11(_study(THREE, falls)).verdict == HOLDS
    grows = {"a": (3.0, 3.0), "b": (6.0, 4.0), "c": (9.0, 5.0)}
    assert c11(_study(THREE, grows)).verdict == FAILS
    # The same values with noise as large as their gaps: the order is not sure either way.
    assert c11(_study(THREE, falls, se=3.0)).verdict == INCONCLUSIVE
    assert c11(_study(THREE, grows, se=3.0)).verdict == INCONCLUSIVE


def test_c11_fails_when_farther_targets_gain_more() -> None:
    drops = {"a": (1.0, 0.5), "b": (3.0, 2.0), "c": (6.0, 4.0), "d": (8.0, 6.0)}
    assert c11(_study(NEAR_TO_FAR, drops)).verdict == FAILS
    # The benefit falls with distance but the shuffle loss grows: the claim's two parts disagree.
    mixed = {"a": (8.0, 0.5), "b": (6.0, 2.0), "c": (3.0, 2.5), "d": (1.0, 3.0)}
    assert c11(_study(NEAR_TO_FAR, mixed)).verdict == FAILS


def test_c11_is_inconclusive_within_noise() -> None:
    # A perfect order of four targets, but with noise as large as the gaps between them.
    drops = {"a": (8.0, 6.0), "b": (6.0, 4.0), "c": (3.0, 2.0), "d": (1.0, 0.5)}
    found = c11(_study(NEAR_TO_FAR, drops, se=4.0))
    assert found.verdict == INCONCLUSIVE, found.measured
    assert c11(_study(NEAR_TO_FAR, drops, se=0.5)).verdict == HOLDS
    # Without a stored interval (a curves result from before it had one) nothing is decided.
    found = c11(_study(THREE, {"a": (9.0, 5.0), "b": (6.0, 4.0), "c": (3.0, 3.0)}, se=None))
    assert found.verdict == INCONCLUSIVE
    assert "no noise estimate for a, b, c" in found.per_target[0].statistic


def test_c11_targets_within_the_source_floor_share_a_rank() -> None:
    """Two targets whose distances differ by less than two subsets of the source do are not
    ordered by distance: their benefits' order cannot count for the claim."""
    near_tie = {"a": 1.0, "b": 1.3, "c": 5.0}
    drops = {"a": (6.0, 4.0), "b": (1.0, 0.5), "c": (3.0, 2.0)}
    # Read as ordered, a > c > b is ρ = -0.5, surely negative.
    assert c11(_study(near_tie, drops)).verdict == HOLDS
    found = c11(_study(near_tie, drops, floor=0.5))
    assert found.verdict == INCONCLUSIVE, found.measured
    assert "ρ = +0.00" in found.measured


def test_c11_is_not_measured_with_two_targets() -> None:
    two = {"a": 1.0, "b": 5.0}
    found = c11(_study(two, {"a": (8.0, 6.0), "b": (1.0, 0.5)}))
    assert found.verdict == UNMEASURED
    assert "at least 3 targets" in found.per_target[0].statistic
    # Without the domain result at all.
    data = _study(NEAR_TO_FAR, {t: (1.0, 0.5) for t in NEAR_TO_FAR})
    data.analyses["domain"] = None
    assert c11(data).verdict == UNMEASURED


def test_c11_negative_control_must_not_hold() -> None:
    """P learned nothing: P-T is no better than RI-T anywhere (within test-set noise) and P sits
    at chance. Drops that happen to fall with distance, even beyond their own noise, must not
    make the claim hold."""
    drops = {"a": (0.4, 0.3), "b": (0.2, 0.1), "c": (0.1, 0.05), "d": (-0.1, -0.2)}
    no_gain = c11(_study(NEAR_TO_FAR, drops, beats=0, se=0.01))
    assert no_gain.verdict == INCONCLUSIVE
    assert "no benefit to rank" in no_gain.measured
    at_chance = c11(_study(NEAR_TO_FAR, drops, p_at_chance=True, se=0.01))
    assert at_chance.verdict == INCONCLUSIVE
    assert "at chance level: P-0" in at_chance.measured


def test_the_report_section_and_findings_row(tmp_path: Path, monkeypatch) -> None:
    """The section draws its table and figures from the study; C11 is one row."""
    store = _three_target_study(tmp_path)
    monkeypatch.setattr("transferscope.study.analyze.DataCache", lambda *a, **k: ShiftedData())
    for name in ("curves", "domain"):
        result = CliRunner().invoke(app, ["analyze", str(store.root), "--only", name])
        assert result.exit_code == 0, result.output
    page = build_report(store.root, formats=("png",))
    html = page.read_text()
    assert 'id="domain"' in html and "Domain similarity" in html
    assert "Fréchet distance" in html
    assert (page.parent / "figures" / "domain-benefit.png").is_file()
    assert (page.parent / "figures" / "domain-shuffles.png").is_file()
    found = c11(load_study(store.root))
    assert [t.target for t in found.per_target] == [ACROSS_TARGETS]
    assert "near" in found.measured and found.verdict != HOLDS  # fake runs: no real benefit
