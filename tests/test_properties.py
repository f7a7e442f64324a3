"""Property tests (hypothesis): invariants that must hold for any valid input, not just examples."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferscope import config
from transferscope.data.shuffle import block_shuffle, pixel_shuffle
from transferscope.measures.distance import parameter_distance
from transferscope.measures.similarity import linear_cka

# Deterministic runs in CI; a small number of examples keeps the file to a few seconds.
FAST = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# --- config: resolved YAML -> config -> the same YAML ---------------------------------------

train_specs = st.fixed_dictionaries(
    {},
    optional={
        "epochs": st.integers(0, 500),
        "batch_size": st.integers(1, 4096),
        "lr": st.floats(1e-6, 10, allow_nan=False),
        "momentum": st.floats(0, 0.99),
        "schedule": st.sampled_from(["constant", "multistep", "cosine"]),
        "milestones": st.lists(st.floats(0, 100), max_size=3),
        "eval_points": st.lists(st.floats(0, 10), max_size=3),
        "checkpoint_points": st.lists(st.floats(0, 10), max_size=3),
        "mixup_alpha": st.floats(0, 2),
        "max_train_examples": st.none() | st.integers(1, 10**6),
    },
)
names = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8)
data_specs = st.fixed_dictionaries(
    {"name": st.sampled_from(["digits", "fashion-mosaic", "imagefolder", "domainnet"])},
    optional={
        "root": st.sampled_from(["/data/a", "relative/b", "~/c d"]),
        "options": st.dictionaries(names, st.integers() | st.booleans() | names, max_size=2),
        "skip_bad_images": st.booleans(),
    },
)
configs = st.fixed_dictionaries(
    {
        "name": names,
        "source": st.just({"name": "fashion-mnist"}),
        "targets": st.lists(data_specs, min_size=1, max_size=3, unique_by=lambda d: d["name"]),
    },
    optional={
        "pretrain": train_specs,
        "finetune": train_specs,
        "randinit": train_specs,
        "seeds": st.lists(st.integers(0, 10**6), min_size=1, max_size=4, unique=True),
        "shuffles": st.fixed_dictionaries(
            {},
            optional={
                "block_sizes": st.lists(st.integers(1, 64), max_size=3),
                "pixel": st.booleans(),
                "seeds": st.lists(st.integers(0, 100), max_size=2),
            },
        ),
        "trajectory": st.fixed_dictionaries(
            {}, optional={"checkpoints": st.lists(st.floats(0, 100), max_size=3)}
        ),
        "num_threads": st.none() | st.integers(1, 64),
        "device": st.sampled_from(["auto", "cpu", "cuda:1"]),
    },
)


@FAST
@given(configs)
def test_config_round_trips_through_resolved_yaml(data):
    cfg = config.from_dict(data)
    text = config.to_yaml(cfg)
    again = config.from_dict(yaml.safe_load(text))
    assert again == cfg
    assert config.to_yaml(again) == text


# --- shuffles are permutations -------------------------------------------------------------


@st.composite
def image_batches(draw):
    blocks = draw(st.integers(1, 4))
    block = draw(st.integers(1, 5))
    batch, channels = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    side = blocks * block
    # Distinct values: a permutation of them is recognisable after sorting.
    images = torch.randperm(batch * channels * side * side).float()
    return images.reshape(batch, channels, side, side), block


@FAST
@given(image_batches(), st.integers(0, 2**31 - 1))
def test_block_shuffle_is_a_permutation_of_blocks(batch, seed):
    images, block = batch
    out = block_shuffle(images, block, seed)
    b, c = images.shape[:2]
    # Per image and channel the multiset of pixels is unchanged...
    assert torch.equal(out.reshape(b, c, -1).sort().values, images.reshape(b, c, -1).sort().values)
    # ...each block moves whole, every image with the same permutation, and it can be undone.
    tiles = out.unfold(2, block, block).unfold(3, block, block).reshape(b, c, -1, block, block)
    src = images.unfold(2, block, block).unfold(3, block, block).reshape(b, c, -1, block, block)
    for k in range(tiles.shape[2]):
        matches = [j for j in range(src.shape[2]) if torch.equal(tiles[:, :, k], src[:, :, j])]
        assert len(matches) == 1
    assert torch.equal(block_shuffle(out, block, seed, inverse=True), images)


@FAST
@given(image_batches(), st.integers(0, 2**31 - 1))
def test_pixel_shuffle_is_one_permutation_of_all_entries(batch, seed):
    images, _ = batch
    out = pixel_shuffle(images, seed)
    flat_in, flat_out = images.reshape(len(images), -1), out.reshape(len(out), -1)
    assert torch.equal(flat_out.sort().values, flat_in.sort().values)
    # The same permutation for every image: where each input entry went is the same index map.
    where = [torch.argsort(flat_out[i]) for i in range(len(out))]
    order = [torch.argsort(flat_in[i]) for i in range(len(images))]
    maps = [where[i][torch.argsort(order[i])] for i in range(len(images))]
    assert all(torch.equal(m, maps[0]) for m in maps)
    assert torch.equal(pixel_shuffle(out, seed, inverse=True), images)


# --- CKA --------------------------------------------------------------------------------------


@st.composite
def feature_pairs(draw):
    n = draw(st.integers(3, 24))
    d1, d2 = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    x = torch.randn(n, d1, generator=g) * scale
    y = torch.randn(n, d2, generator=g)
    if draw(st.booleans()):
        y = torch.cat([y, x @ torch.randn(d1, 2, generator=g)], dim=1)  # partly shared features
    return x, y


@FAST
@given(feature_pairs())
def test_cka_is_in_unit_interval_and_symmetric(pair):
    x, y = pair
    value = linear_cka(x, y)
    assert -1e-9 <= value <= 1 + 1e-9
    assert value == pytest.approx(linear_cka(y, x), abs=1e-9)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)


# --- parameter distance is a metric ------------------------------------------------------------


@st.composite
def states(draw, count):
    shapes = draw(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=4))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scales = draw(st.lists(st.sampled_from([0.0, 1e-3, 1.0, 50.0]), min_size=count, max_size=count))
    return [
        {f"layer{i}.weight": torch.randn(*s, generator=g) * sc for i, s in enumerate(shapes)}
        for sc in scales
    ]


@FAST
@given(states(3))
def test_parameter_distance_is_a_metric(three):
    a, b, c = three
    d = lambda p, q: parameter_distance(p, q).total  # noqa: E731
    assert d(a, a) == 0.0 and d(b, b) == 0.0
    assert d(a, b) == pytest.approx(d(b, a), rel=1e-12, abs=0)
    assert d(a, c) <= d(a, b) + d(b, c) + 1e-9 * (1 + d(a, b) + d(b, c))
    assert d(a, b) >= 0 and math.isfinite(d(a, b))
    # Against an independent formulation: the l2 norm of every difference.
    flat = torch.cat([(a[k].double() - b[k].double()).flatten() for k in a])
    assert d(a, b) == pytest.approx(float(flat.norm()), rel=1e-6, abs=1e-9)
