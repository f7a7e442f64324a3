"""Replaying the modules that run before the one module whose weights a probe changes.

Module criticality (:mod:`transferscope.measures.criticality`) evaluates a network hundreds of
times on the same batches with only one module's weights moved. Every module that finishes before
that module starts sees the same input and the same weights each time, so its output is the same
tensor: :class:`PrefixReplay` computes those outputs once per batch (at the reference weights) and
makes the modules return them, so a probe of a block near the output costs a fraction of a full
forward. The result is exactly what the full forward gives (the replayed tensors are the ones it
computed); code between modules (e.g. an activation in the parent's ``forward``) still runs.

A module is replayed only when it is safe and checked: it is called once per forward, returns a
tensor, shares no weight with the changing module, and after recording the first batch a replayed
forward must reproduce the full forward bit for bit without writing into a replayed tensor (an
in-place op downstream would corrupt it); otherwise nothing is replayed. Replayed outputs are kept
up to ``max_bytes`` in all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator

import torch
from torch import Tensor, nn

MAX_BYTES = 256 * 1024**2


class PrefixReplay:
    """Records, then replays, the outputs of the modules that run before module ``varying``.

    Args:
        model: the network (its submodules' ``forward`` is patched only inside :meth:`replay`).
        varying: the module path whose weights will change (e.g. ``layer3.0``).
        max_bytes: the most memory the kept outputs may take; beyond it nothing is replayed.

    Use: :meth:`record` each batch once at the reference weights, then evaluate inside
    ``with replay.replay(key):`` with any weights that differ only inside ``varying``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from transferscope.measures.replay import PrefixReplay
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> x = torch.randn(5, 4)
        >>> replay = PrefixReplay(net, "2")  # the last layer's weights will change
        >>> reference = replay.record("batch 0", lambda: net(x))
        >>> replay.active, sorted(replay.modules)  # the modules that run before it
        (True, ['0', '1'])
        >>> with torch.no_grad():
        ...     _ = net[2].weight.mul_(2.0)
        ...     with replay.replay("batch 0"):
        ...         replayed = net(x)  # layers 0 and 1 return their recorded outputs
        ...     full = net(x)
        >>> torch.equal(replayed, full)  # exactly the full forward
        True
    """

    def __init__(self, model: nn.Module, varying: str, max_bytes: int = MAX_BYTES) -> None:
        self.model = model
        self.varying = varying
        self.max_bytes = max_bytes
        self.modules: dict[str, nn.Module] | None = None  # None until the first record
        self.outputs: dict[Hashable, dict[str, Tensor]] = {}
        self._bytes = 0

    @property
    def active(self) -> bool:
        """Whether modules are replayed (False: every forward is computed in full)."""
        return bool(self.modules)

    def record(self, key: Hashable, forward: Callable[[], Tensor]) -> Tensor:
        """Run ``forward()`` (the model at the reference weights) and keep, under ``key``, the
        outputs of the modules that run before ``varying``; returns ``forward()``'s output."""
        if self.modules is None:
            return self._first(key, forward)
        if not self.modules:
            return forward()
        kept: dict[str, Tensor] = {}
        with _capturing(self.modules, kept):
            out = forward()
        self._keep(key, kept)
        return out

    @contextlib.contextmanager
    def replay(self, key: Hashable) -> Iterator[None]:
        """Inside, the recorded modules return their outputs recorded under ``key``."""
        outputs = self.outputs.get(key) if self.active else None
        if not outputs:
            yield
            return
        assert self.modules is not None
        for name, module in self.modules.items():
            module.forward = _constant(outputs[name])  # an instance attribute shadows the method
        try:
            yield
        finally:
            for module in self.modules.values():
                del module.forward

    def _first(self, key: Hashable, forward: Callable[[], Tensor]) -> Tensor:
        """The first batch: find the modules to replay from the call order, then check them.

        The outputs of every module are kept during this forward (up to ``max_bytes``), so the
        chosen ones need no second pass unless they did not fit.
        """
        order: list[tuple[str, str]] = []  # ('start' | 'end', module name)
        outputs: dict[str, Tensor] = {}
        room = [self.max_bytes]

        def end(name: str) -> Callable[..., None]:
            def hook(_module: nn.Module, _args: object, output: object) -> None:
                order.append(("end", name))
                size = output.numel() * output.element_size() if isinstance(output, Tensor) else 0
                if isinstance(output, Tensor) and size and name not in outputs and size <= room[0]:
                    outputs[name] = output.detach()
                    room[0] -= size

            return hook

        handles = []
        for name, module in self.model.named_modules():
            if name:
                handles.append(module.register_forward_pre_hook(_noting(order, "start", name)))
                handles.append(module.register_forward_hook(end(name)))
        try:
            reference = forward()
        finally:
            for handle in handles:
                handle.remove()
        self.modules = self._before_varying(order)
        kept = {name: outputs[name] for name in self.modules if name in outputs}
        if len(kept) < len(self.modules):  # some did not fit while everything was kept
            kept = {}
            with _capturing(self.modules, kept):
                forward()
        # A module whose output is not one tensor is computed as usual.
        self.modules = {name: m for name, m in self.modules.items() if name in kept}
        self._keep(key, kept)
        if self.active:
            versions = {name: t._version for name, t in kept.items()}
            with self.replay(key):
                again = forward()
            changed = any(t._version != versions[name] for name, t in kept.items())
            if changed or not _identical(again, reference):
                self.modules, self.outputs, self._bytes = {}, {}, 0
        return reference

    def _before_varying(self, order: list[tuple[str, str]]) -> dict[str, nn.Module]:
        """The outermost modules that end before ``varying`` starts, each called once, sharing
        no weight with it and not containing it."""
        starts = [i for i, (event, name) in enumerate(order) if event == "start"]
        names = [order[i][1] for i in starts]
        if self.varying not in names:
            return {}
        begin = order.index(("start", self.varying))
        submodules = dict(self.model.named_modules())
        shared = {p.data_ptr() for p in submodules[self.varying].parameters()}
        chosen: dict[str, nn.Module] = {}
        for name in dict.fromkeys(names):
            if names.count(name) != 1 or order.index(("end", name)) > begin:
                continue
            if any(name.startswith(c + ".") for c in chosen):
                continue  # inside a module already replayed
            module = submodules[name]
            if any(p.data_ptr() in shared for p in module.parameters()):
                continue
            chosen[name] = module
        return chosen

    def _keep(self, key: Hashable, kept: dict[str, Tensor]) -> None:
        self._bytes += sum(t.numel() * t.element_size() for t in kept.values())
        if set(kept) != set(self.modules or {}) or self._bytes > self.max_bytes:
            self.modules, self.outputs, self._bytes = {}, {}, 0  # replay nothing
            return
        self.outputs[key] = kept


def _noting(order: list[tuple[str, str]], event: str, name: str) -> Callable[..., None]:
    def hook(*_: object) -> None:
        order.append((event, name))

    return hook


@contextlib.contextmanager
def _capturing(modules: dict[str, nn.Module], kept: dict[str, Tensor]) -> Iterator[None]:
    def keep(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            if isinstance(output, Tensor):
                kept[name] = output.detach()

        return hook

    handles = [m.register_forward_hook(keep(name)) for name, m in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _constant(output: Tensor) -> Callable[..., Tensor]:
    def forward(*_: object, **__: object) -> Tensor:
        return output

    return forward


def _identical(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))


__all__ = ["MAX_BYTES", "PrefixReplay"]
