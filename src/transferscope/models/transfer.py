"""P-T's starting point: P with a fresh classifier head (Neyshabur et al. 2020)."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
from torch import nn

from transferscope.errors import TransferscopeError
from transferscope.models.layout import layout


def transfer(
    p_model: nn.Module, num_outputs: int, seed: int | None = None, zero_head: bool | None = None
) -> nn.Module:
    """A deep copy of P with every weight kept except the head, freshly initialised.

    The new head maps P's features to (B, num_outputs) logits. P itself is not modified. See
    :func:`replace_head` for how the head is initialised.
    """
    model = copy.deepcopy(p_model)
    replace_head(model, num_outputs, seed=seed, zero_head=zero_head)
    return model


def replace_head(
    model: nn.Module, num_outputs: int, seed: int | None = None, zero_head: bool | None = None
) -> nn.Module:
    """Replace ``model``'s head (``layout(model).head``) in place by a fresh one; return the model.

    The head gets torch's default init, drawn under ``torch.manual_seed(seed)`` when ``seed`` is
    given (so two calls with one seed give the same head, and the global RNG is left untouched)
    and from the global RNG otherwise; with ``zero_head`` it is zero instead. ``zero_head`` None
    follows the model: Fixup networks (``model.zero_init_head`` true) zero their head, as Fixup
    prescribes for a network's first head. A study passes it explicitly: fine-tuning gives P-T a
    random head by default, as the paper's released fine-tuning configurations do, so that two
    P-T seeds differ in head init as well as data order. timm models use their
    ``reset_classifier``; other models need an ``nn.Linear`` head, rebuilt with the same input
    size. The head keeps the old one's device and dtype.
    """
    if num_outputs < 1:
        raise TransferscopeError(f"a head needs num_outputs >= 1, got {num_outputs}")
    path = layout(model).head
    old = model.get_submodule(path)
    reference = next(old.parameters(), None)
    rng = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        reset_classifier = getattr(model, "reset_classifier", None)
        if callable(reset_classifier):
            # timm's own way, which also updates model.num_classes and pooling.
            reset_classifier(num_outputs)
            new: nn.Module = model.get_submodule(path)
        elif isinstance(old, nn.Linear):
            new = nn.Linear(old.in_features, num_outputs, bias=old.bias is not None)
            model.set_submodule(path, new)
        else:
            raise TransferscopeError(
                f"cannot replace the head '{path}' of a {type(model).__name__}: it is a "
                f"{type(old).__name__}, not nn.Linear, and the model has no reset_classifier"
            )
    if zero_head if zero_head is not None else getattr(model, "zero_init_head", False):
        for param in new.parameters():
            nn.init.zeros_(param)
    if reference is not None:
        new.to(device=reference.device, dtype=reference.dtype)
    return model
