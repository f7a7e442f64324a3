"""Fixup residual networks: ResNets without BatchNorm (Zhang, Dauphin, Ma, ICLR 2019).

The paper trains a Fixup ResNet-50 (training setup in docs/methods.md) so that weights can be
interpolated (section 3) and perturbed (section 4) without BatchNorm statistics going stale. Fixup
replaces normalisation by an initialisation and a few scalars:

1. the classification layer and the last layer of every residual branch start at zero, so every
   block is the identity on its branch and the network's initial output is exactly 0;
2. the other layers inside a branch get He-normal init scaled by ``L ** (-1 / (2m - 2))``, with
   ``L`` residual branches of ``m`` layers each (basic block: m = 2, L^(-1/2); bottleneck: m = 3,
   L^(-1/4));
3. a scalar bias before every convolution, activation and the classifier, and a scalar multiplier
   (``scale``) at the end of each branch. These scalars are trained with lr/10 (see
   :func:`scalar_parameter_names`).

Which fan He-normal uses: inside residual branches ``fan_out`` (out_channels x kernel area), as
in the Fixup authors' code that the paper used (hongyi-zhang/Fixup, vendored in
google-research/understanding-transfer-learning). The stem and the 1x1 shortcut convolutions sit
on the identity path, outside any branch, where Fixup asks for "a standard initialisation": they
get ``fan_in`` He-normal, which preserves the forward signal's variance (the authors leave the stem
at PyTorch's default, also fan_in-scaled). This matters for 1-channel inputs: a fan_out stem
(fan 144 instead of 9 for 16 filters of 3x3) shrinks the signal 4x, and a from-scratch fixup-small
then stays near chance on the digits target for 10 epochs, while this init reaches 75-97% test
accuracy (10 seeds, SGD lr 0.05, momentum 0.9, batch 64). Like any network without normalisation,
it tolerates less learning rate than a BatchNorm ResNet: at a constant lr 0.1, 2 of 10 such runs
diverged late in training.

Naming follows torchvision's ResNet (``conv1``, ``layer1``.., ``fc``), so state dicts look
familiar and the layout is inferred.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

from transferscope.errors import TransferscopeError


def _scalar(value: float) -> nn.Parameter:
    # Shape (1,) as in the authors' code, so their checkpoints' state dicts line up with ours.
    return nn.Parameter(torch.full((1,), value))


def he_std(weight: Tensor, mode: str = "fan_out") -> float:
    """He-normal standard deviation ``sqrt(2 / fan)`` of a conv weight (C_out, C_in, k, k)."""
    channels = weight.shape[0] if mode == "fan_out" else weight.shape[1]
    return math.sqrt(2.0 / (channels * math.prod(weight.shape[2:])))


def _he_normal_(weight: Tensor, factor: float = 1.0, mode: str = "fan_out") -> None:
    with torch.no_grad():
        weight.normal_(0.0, he_std(weight, mode) * factor)


def fixup_factor(num_branches: int, layers_per_branch: int) -> float:
    """Fixup's rescaling ``L ** (-1 / (2m - 2))`` of the He init inside a residual branch."""
    return num_branches ** (-1.0 / (2 * layers_per_branch - 2))


class _FixupBlock(nn.Module):
    """What the Fixup blocks share: the shortcut, the sum of branch and shortcut, and the Fixup
    init of the branch's convolutions (``branch_convs``, in order; the last starts at zero)."""

    layers_per_branch: int
    expansion: int
    branch_convs: tuple[str, ...]
    bias1a: nn.Parameter
    downsample: nn.Conv2d | None

    def _add_downsample(self, in_channels: int, out_channels: int, stride: int) -> None:
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def init_fixup(self, num_branches: int) -> None:
        """Fixup init of this block for a network with ``num_branches`` residual branches."""
        factor = fixup_factor(num_branches, self.layers_per_branch)
        *scaled, last = (getattr(self, name) for name in self.branch_convs)
        for conv in scaled:
            _he_normal_(conv.weight, factor)
        nn.init.zeros_(last.weight)
        if self.downsample is not None:
            _he_normal_(self.downsample.weight, mode="fan_in")

    def branch(self, x: Tensor) -> Tensor:
        """The residual branch alone (zero at init)."""
        raise NotImplementedError

    def shortcut(self, x: Tensor) -> Tensor:
        """The skip path: identity, or a strided 1x1 convolution when the shape changes."""
        return x if self.downsample is None else self.downsample(x + self.bias1a)

    def forward(self, x: Tensor) -> Tensor:
        # No in-place ops: analysis hooks may hold references to intermediate outputs.
        return F.relu(self.branch(x) + self.shortcut(x))


class FixupBasicBlock(_FixupBlock):
    """Two 3x3 convolutions with Fixup scalars; (B, C_in, H, W) -> (B, C_out, H/s, W/s)."""

    layers_per_branch = 2
    expansion = 1
    branch_convs = ("conv1", "conv2")

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.bias1a = _scalar(0.0)
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bias1b = _scalar(0.0)
        self.bias2a = _scalar(0.0)
        self.conv2 = nn.Conv2d(planes, out_channels, 3, padding=1, bias=False)
        self.scale = _scalar(1.0)
        self.bias2b = _scalar(0.0)
        self._add_downsample(in_channels, out_channels, stride)

    def branch(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x + self.bias1a) + self.bias1b)
        return self.conv2(out + self.bias2a) * self.scale + self.bias2b


class FixupBottleneck(_FixupBlock):
    """1x1 -> 3x3 (stride) -> 1x1 (x4 channels) with Fixup scalars, as in Fixup ResNet-50."""

    layers_per_branch = 3
    expansion = 4
    branch_convs = ("conv1", "conv2", "conv3")

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.bias1a = _scalar(0.0)
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bias1b = _scalar(0.0)
        self.bias2a = _scalar(0.0)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bias2b = _scalar(0.0)
        self.bias3a = _scalar(0.0)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.scale = _scalar(1.0)
        self.bias3b = _scalar(0.0)
        self._add_downsample(in_channels, out_channels, stride)

    def branch(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = F.relu(self.conv2(out + self.bias2a) + self.bias2b)
        return self.conv3(out + self.bias3a) * self.scale + self.bias3b


class FixupResNet(nn.Module):
    """A Fixup ResNet: stem -> stages (stride 2 between stages) -> global average pool -> fc.

    Input (B, in_channels, H, W), output logits (B, num_outputs). With ``stem="imagenet"`` the stem
    is a 7x7 stride-2 convolution and a 3x3 stride-2 max-pool (ResNet-50, 224 px); with
    ``stem="small"`` it is one 3x3 stride-1 convolution (28-64 px inputs).
    """

    # The P-T head of a Fixup network is zero-initialised like its first head (Fixup rule 1).
    zero_init_head = True

    def __init__(
        self,
        block: type[FixupBasicBlock] | type[FixupBottleneck],
        blocks_per_stage: Sequence[int],
        widths: Sequence[int],
        num_outputs: int,
        in_channels: int = 3,
        stem: str = "small",
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if len(blocks_per_stage) != len(widths) or not widths:
            raise TransferscopeError(
                f"Fixup ResNet needs one block count per stage: got widths {tuple(widths)} and "
                f"blocks_per_stage {tuple(blocks_per_stage)}"
            )
        if min(blocks_per_stage) < 1 or min(widths) < 1:
            raise TransferscopeError(
                f"Fixup ResNet widths and blocks_per_stage must be >= 1, got widths "
                f"{tuple(widths)} and blocks_per_stage {tuple(blocks_per_stage)}"
            )
        self.num_branches = sum(blocks_per_stage)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        elif stem == "small":
            self.conv1 = nn.Conv2d(
                in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False
            )
            self.maxpool = nn.Identity()
        else:
            raise TransferscopeError(f"unknown Fixup stem '{stem}'; valid: imagenet, small")
        self.bias1 = _scalar(0.0)
        channels = widths[0]
        self._stage_names: list[str] = []
        for index, (width, count) in enumerate(zip(widths, blocks_per_stage, strict=True)):
            blocks = []
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                blocks.append(block(channels, width, stride))
                channels = width * block.expansion
            name = f"layer{index + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self._stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.bias2 = _scalar(0.0)
        self.fc = nn.Linear(channels, num_outputs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fixup initialisation of every weight (scalars to 0, scales to 1, fc to 0)."""
        _he_normal_(self.conv1.weight, mode="fan_in")
        for module in self.modules():
            if isinstance(module, _FixupBlock):
                module.init_fixup(self.num_branches)
                for name, param in module.named_parameters(recurse=False):
                    nn.init.constant_(param, 1.0 if name == "scale" else 0.0)
        nn.init.zeros_(self.bias1)
        nn.init.zeros_(self.bias2)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def features(self, x: Tensor) -> Tensor:
        """Pooled features before the head: (B, C, H, W) -> (B, fc.in_features)."""
        x = F.relu(self.conv1(x) + self.bias1)
        x = self.maxpool(x)
        for name in self._stage_names:
            x = getattr(self, name)(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x) + self.bias2)


def fixup_small(
    num_outputs: int,
    in_channels: int = 3,
    widths: Sequence[int] = (16, 32, 64),
    blocks_per_stage: int | Sequence[int] = 1,
    stem_stride: int = 1,
) -> FixupResNet:
    """A small Fixup ResNet for 28-64 px inputs (the mini preset's model).

    3x3 stem conv (stride ``stem_stride``), then one stage per width (basic blocks, stride 2
    between stages), global average pool and fc. Input (B, in_channels, H, W) -> logits
    (B, num_outputs). ``stem_stride=2`` makes it about 4x cheaper on a CPU at 28 px.
    """
    if stem_stride not in (1, 2):
        raise TransferscopeError(f"fixup-small: stem_stride must be 1 or 2, got {stem_stride}")
    counts = (
        [blocks_per_stage] * len(widths)
        if isinstance(blocks_per_stage, int)
        else list(blocks_per_stage)
    )
    return FixupResNet(
        FixupBasicBlock, counts, list(widths), num_outputs, in_channels, "small", stem_stride
    )


def fixup_resnet50(num_outputs: int, in_channels: int = 3) -> FixupResNet:
    """The paper's Fixup ResNet-50: bottlenecks [3, 4, 6, 3], widths 64..512 (x4), 7x7 stem.

    Input (B, in_channels, H, W) (224 px in the paper) -> logits (B, num_outputs).
    """
    return FixupResNet(
        FixupBottleneck, [3, 4, 6, 3], [64, 128, 256, 512], num_outputs, in_channels, "imagenet"
    )


# Layers whose one-element weight or bias is an ordinary layer parameter, not a Fixup scalar
# (e.g. the bias of a one-output classifier).
_LAYERS = (_ConvNd, nn.Linear, _NormBase, nn.GroupNorm, nn.LayerNorm, nn.Embedding)


def scalar_parameter_names(model: nn.Module) -> set[str]:
    """Names (as in ``model.named_parameters()``) of the scalar parameters to train at lr/10.

    Rule: every parameter with exactly one element that is not the weight or bias of a standard
    layer (convolution, linear, normalisation, embedding). For Fixup networks these are exactly
    the Fixup scalar biases (``bias1a``, ..., ``bias1``, ``bias2``) and multipliers (``scale``);
    other architectures usually have none.
    """
    names = set()
    for prefix, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if param.numel() == 1 and not isinstance(module, _LAYERS):
                names.add(f"{prefix}.{name}" if prefix else name)
    return names
