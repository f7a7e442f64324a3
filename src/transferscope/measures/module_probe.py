"""A network with one module moved, evaluated on fixed batches: the machinery of module criticality and the rewind test (Neyshabur et al. 2020, §3.4).

For a module i with initial value θ_i^0 and final value θ_i^F, :class:`PerturbedModule` builds the
full state with module i at θ_i^α = (1 − α) θ_i^0 + α θ_i^F (every other module final), plus σ
times a fixed standard-normal draw on module i's parameters (common random numbers: the same draw
for every (α, σ)). :class:`Probe` evaluates such states on a fixed training or test subset loaded
once (:func:`probe_batches`), counts forward passes, and while one module varies replays the
outputs of the modules before it (:class:`~transferscope.measures.replay.PrefixReplay`).

Shared by :mod:`transferscope.measures.criticality` (the μ search) and
:mod:`transferscope.measures.rewind` (rewinding and heat maps).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import Dataset

from transferscope.data.base import Task
from transferscope.errors import TransferscopeError
from transferscope.measures.replay import PrefixReplay
from transferscope.models.layout import layout
from transferscope.training.loaders import BatchTransform, epoch_order, forward_in_chunks, iterate
from transferscope.training.metrics import loss_fn, score


def default_modules(model: nn.Module) -> list[str]:
    """The stem, every residual block and the head, input to output (module paths).

    Example:
        >>> from transferscope.measures.module_probe import default_modules
        >>> from transferscope.models.fixup import fixup_small
        >>> default_modules(fixup_small(num_outputs=3, in_channels=1, widths=(4, 8)))
        ['conv1', 'layer1.0', 'layer2.0', 'fc']
    """
    parts = layout(model)
    return [parts.stem, *parts.blocks, parts.head]


def _within(key: str, module: str) -> bool:
    return key == module or key.startswith(module + ".")


def check_states(
    model: nn.Module, init_state: Mapping[str, Tensor], final_state: Mapping[str, Tensor]
) -> None:
    """Raise a TransferscopeError unless both states have exactly the model's keys and shapes.

    Example:
        >>> from torch import nn
        >>> from transferscope.measures.module_probe import check_states
        >>> net = nn.Linear(4, 3)
        >>> check_states(net, net.state_dict(), net.state_dict())  # fine: returns None
        >>> check_states(net, {"weight": net.weight}, net.state_dict())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        transferscope.errors.TransferscopeError: init_state does not fit the model: ... bias
    """
    names = dict(model.state_dict())
    for label, state in (("init_state", init_state), ("final_state", final_state)):
        bad = sorted(k for k in names if k not in state or state[k].shape != names[k].shape)
        extra = sorted(set(state) - set(names))
        if bad or extra:
            listed = ", ".join([*bad, *extra][:8])
            raise TransferscopeError(
                f"{label} does not fit the model: missing, extra or reshaped entries {listed}"
            )


def probe_batches(
    data: Dataset,
    max_examples: int | None,
    batch_size: int,
    device: torch.device,
    transform: BatchTransform | None,
    seed: int = 0,
) -> list[tuple[Tensor, Tensor]]:
    """A fixed random subset of ``data``, loaded once and kept on ``device`` (re-used per probe).

    Example:
        >>> import torch
        >>> from transferscope.data.base import TensorImageDataset
        >>> from transferscope.measures.module_probe import probe_batches
        >>> data = TensorImageDataset(torch.randn(10, 1, 2, 2), torch.zeros(10, dtype=torch.long))
        >>> batches = probe_batches(data, 6, 4, torch.device("cpu"), None)  # 6 of 10, by 4
        >>> [len(y) for _, y in batches]
        [4, 2]
        >>> again = probe_batches(data, 6, 4, torch.device("cpu"), None)
        >>> all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))  # seeded: the same
        True
    """
    n = len(data)  # type: ignore[arg-type]
    order = None if max_examples is None or max_examples >= n else epoch_order(n, seed, 0)
    if order is not None:
        order = order[:max_examples]
    out = list(iterate(data, batch_size, order=order, device=device, transform=transform))
    if not out:
        raise TransferscopeError("module criticality needs a non-empty data set")
    return out


class Probe:
    """Loss or metric of the model with a given state on preloaded batches; counts forwards.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from transferscope.measures.module_probe import Probe
        >>> net = nn.Sequential(nn.Linear(4, 3))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.zero_(), net[0].bias.zero_()  # uniform outputs
        >>> batches = [(torch.randn(4, 4), torch.tensor([0, 1, 2, 0]))] * 2
        >>> probe = Probe(net, batches, "multiclass")
        >>> loss, metric = probe.evaluate(net.state_dict())
        >>> round(loss, 4), metric, probe.forwards  # ln 3; argmax 0 is right on half of them
        (1.0986, 0.5, 2)
        >>> round(probe.loss_sum(net.state_dict()), 4), probe.forwards
        (1.0986, 4)
    """

    def __init__(self, model: nn.Module, batches: list[tuple[Tensor, Tensor]], task: Task) -> None:
        self.model = model.eval()
        self.batches = batches
        self.task = task
        self.n = sum(len(y) for _, y in batches)
        self.forwards = 0
        self._replay: PrefixReplay | None = None

    def _call(self, state: dict[str, Tensor], rows: Tensor) -> Tensor:
        cast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if rows.device.type == "cuda"
            else nullcontext()
        )
        with cast:
            return functional_call(self.model, state, (rows,))

    def _forward(self, state: Mapping[str, Tensor], index: int) -> Tensor:
        """The model's outputs at ``state`` on batch ``index`` (float32)."""
        self.forwards += 1
        full, replay, chunks = dict(state), self._replay, itertools.count()

        def run(rows: Tensor) -> Tensor:
            if replay is None:
                return self._call(full, rows)
            with replay.replay((index, next(chunks))):
                return self._call(full, rows)

        return forward_in_chunks(run, self.batches[index][0]).float()

    @contextlib.contextmanager
    def varying(self, module: str, reference: Mapping[str, Tensor]) -> Iterator[None]:
        """Inside, probed states differ from ``reference`` only in ``module``'s entries: the
        modules that run before it replay their outputs at ``reference`` (computed here, one
        pass over the batches) instead of computing them again (:class:`PrefixReplay`)."""
        replay, full = PrefixReplay(self.model, module), dict(reference)
        with torch.no_grad():
            for index, (x, _) in enumerate(self.batches):
                self.forwards += 1
                chunks = itertools.count()

                def record(rows: Tensor, index: int = index, chunks: Any = chunks) -> Tensor:
                    return replay.record((index, next(chunks)), lambda: self._call(full, rows))

                forward_in_chunks(record, x)
                if not replay.active:
                    break  # nothing runs before the module, or it cannot be replayed safely
        self._replay = replay if replay.active else None
        try:
            yield
        finally:
            self._replay = None

    @torch.no_grad()
    def loss_sum(self, state: Mapping[str, Tensor], offset: float = 0.0, limit: float = math.inf):
        """Mean loss over the batches; stops once ``offset`` + the running mean exceeds ``limit``.

        The running mean only grows (losses are >= 0), so a stopped evaluation is certainly above
        ``limit``; its (partial) value is returned.
        """
        total = 0.0
        for index, (_, y) in enumerate(self.batches):
            total += loss_fn(self.task, self._forward(state, index), y).item() * len(y)
            if offset + total / self.n > limit:
                break
        return total / self.n

    @torch.no_grad()
    def evaluate(self, state: Mapping[str, Tensor]) -> tuple[float, float]:
        """(loss, metric) over all batches."""
        outs = [self._forward(state, i).cpu() for i in range(len(self.batches))]
        ev = score(self.task, torch.cat(outs), torch.cat([y.cpu() for _, y in self.batches]))
        return ev.loss, ev.metric


class PerturbedModule:
    """One module's keys, its θ^0 and θ^F entries, Δ norm and fixed noise draws.

    Example:
        >>> import torch
        >>> from transferscope.measures.module_probe import PerturbedModule
        >>> final = {"0.weight": torch.ones(2, 2), "0.bias": torch.ones(2), "1.bias": torch.ones(2)}
        >>> init = {**final, "0.weight": torch.zeros(2, 2), "0.bias": torch.zeros(2)}
        >>> module = PerturbedModule("0", 0, set(final), init, final, samples=1, seed=0)
        >>> module.keys, round(module.distance**2, 4)  # ‖θ^F − θ^0‖² over its 6 entries
        (['0.weight', '0.bias'], 6.0)
        >>> halfway = module.state(final, alpha=0.5)
        >>> halfway["0.weight"].tolist(), halfway["1.bias"].tolist()  # other modules final
        ([[0.5, 0.5], [0.5, 0.5]], [1.0, 1.0])
        >>> noisy = module.state(final, 1.0, sigma=0.1)
        >>> torch.equal(noisy["0.bias"], module.state(final, 1.0, sigma=0.1)["0.bias"])  # fixed
        True
    """

    def __init__(
        self,
        name: str,
        index: int,
        params: set[str],
        init: Mapping[str, Tensor],
        final: Mapping[str, Tensor],
        samples: int,
        seed: int,
    ) -> None:
        self.name = name
        self.keys = [k for k in final if _within(k, name)]
        if not self.keys:
            raise TransferscopeError(f"module '{name}' has no entries in the model's state")
        self.init = {k: init[k] for k in self.keys}
        self.final = {k: final[k] for k in self.keys}
        self.params = [k for k in self.keys if k in params and final[k].is_floating_point()]
        sq = sum(float((final[k].double() - init[k].double()).pow(2).sum()) for k in self.params)
        self.distance = math.sqrt(sq)
        # Common random numbers: one standard-normal draw per (module, sample), reused for every
        # (α, σ) so that the pruned search and the exhaustive grid see the same noise.
        self.noise: list[dict[str, Tensor]] = []
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + index)
        for _ in range(samples):
            self.noise.append(
                {
                    k: torch.randn(final[k].shape, generator=g, dtype=torch.float32)
                    .to(final[k].device)
                    .to(final[k].dtype)
                    for k in self.params
                }
            )

    def state(
        self, base: Mapping[str, Tensor], alpha: float, sigma: float = 0.0, sample: int = 0
    ) -> dict[str, Tensor]:
        """The full state with this module at θ^α (+ σ × noise draw ``sample``)."""
        out = dict(base)
        for k in self.keys:
            a, f = self.init[k], self.final[k]
            out[k] = torch.lerp(a, f, alpha) if f.is_floating_point() else a
        if sigma > 0:
            for k in self.params:
                out[k] = out[k] + sigma * self.noise[sample][k]
        return out


def alpha_grid(num_alphas: int) -> list[float]:
    """``num_alphas`` evenly spaced α from 0 (θ^0) to 1 (θ^F), both ends included.

    Example:
        >>> from transferscope.measures.module_probe import alpha_grid
        >>> alpha_grid(5)
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    return [float(a) for a in torch.linspace(0, 1, num_alphas, dtype=torch.float64)]


def copy_structure(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` on ``device`` in eval mode, to probe (``model`` is left as it is).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from transferscope.measures.module_probe import copy_structure
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.Dropout()).train()
        >>> work = copy_structure(net, torch.device("cpu"))
        >>> work is net, work.training, net.training
        (False, False, True)
        >>> torch.equal(work[0].weight, net[0].weight)
        True
    """
    return copy.deepcopy(model).to(device).eval()


@dataclasses.dataclass
class ProbeSetup:
    """What every per-module probe starts from: the modules, the model's parameter names, θ^0 and
    θ^F on the device, and a :class:`Probe` on a fixed subset of the data."""

    names: list[str]
    params: set[str]
    init: dict[str, Tensor]
    final: dict[str, Tensor]
    probe: Probe


@dataclasses.dataclass(frozen=True)
class ProbeInputs:
    """A network to probe module by module and the data it is evaluated on: what
    :func:`~transferscope.measures.criticality.module_criticality`,
    :func:`~transferscope.measures.rewind.rewind_modules` and
    :func:`~transferscope.measures.rewind.criticality_heatmap` share (Neyshabur et al. 2020, §3.4).

    Attributes:
        model: the architecture (its own weights are not used or changed).
        init_state, final_state: θ^0 and θ^F, state dicts of ``model``.
        data: examples (image (C, H, W), target): the training split for μ, the test split for
            the rewind test and the heat maps.
        modules: module paths (default: stem, residual blocks, head, :func:`default_modules`).
        task: 'multiclass' or 'multilabel' (decides the loss and the metric).
        batch_size, device, transform: how the fixed subset is batched, where it is evaluated,
            and a per-batch image transform (e.g. a block shuffle).

    Example:
        >>> import torch
        >>> from transferscope.data.base import TensorImageDataset
        >>> from transferscope.measures.module_probe import ProbeInputs
        >>> data = TensorImageDataset(torch.randn(16, 1, 2, 2), torch.randint(0, 3, (16,)))
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> zero = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
        >>> setup = ProbeInputs(net, zero, net.state_dict(), data, ["1"]).setup(max_examples=8)
        >>> setup.names, setup.probe.n, sorted(setup.params)  # a fixed random subset of 8
        (['1'], 8, ['1.bias', '1.weight'])
    """

    model: nn.Module
    init_state: Mapping[str, Tensor]
    final_state: Mapping[str, Tensor]
    data: Dataset
    modules: Sequence[str] | None = None
    task: Task = "multiclass"
    batch_size: int = 500
    device: torch.device | str = "cpu"
    transform: BatchTransform | None = None

    def setup(self, max_examples: int | None, seed: int = 0) -> ProbeSetup:
        """Check the two states against the model and load what a probe of its modules needs,
        on a fixed random subset of at most ``max_examples`` examples (``seed`` picks it)."""
        check_states(self.model, self.init_state, self.final_state)
        device = torch.device(self.device)
        names = list(self.modules) if self.modules is not None else default_modules(self.model)
        batches = probe_batches(
            self.data, max_examples, self.batch_size, device, self.transform, seed
        )
        return ProbeSetup(
            names,
            {k for k, _ in self.model.named_parameters()},
            {k: v.detach().to(device) for k, v in self.init_state.items()},
            {k: v.detach().to(device) for k, v in self.final_state.items()},
            Probe(copy_structure(self.model, device), batches, self.task),
        )


__all__ = [
    "PerturbedModule",
    "Probe",
    "ProbeInputs",
    "ProbeSetup",
    "alpha_grid",
    "check_states",
    "copy_structure",
    "default_modules",
    "probe_batches",
]
