"""Models: a registry of builders, Fixup ResNets, layouts for the analyses, and P -> P-T.

>>> from transferscope.models import build_model, transfer, analysis_layers
>>> p = build_model("fixup-small", num_outputs=10, in_channels=1)
>>> p_t = transfer(p, num_outputs=5, seed=0)
>>> list(analysis_layers(p_t))
['conv1', 'layer1', 'layer2', 'layer3']
"""

from transferscope.models.adapters import imagenet_state, imagenet_weights_path
from transferscope.models.fixup import (
    FixupBasicBlock,
    FixupBottleneck,
    FixupResNet,
    fixup_factor,
    scalar_parameter_names,
)
from transferscope.models.layout import ModelLayout, analysis_layers, layout, set_layout
from transferscope.models.registry import (
    available_models,
    build_model,
    check_model_options,
    model_options,
    register,
)
from transferscope.models.transfer import replace_head, transfer
from transferscope.models.weights import adapt_stem, load_state, read_state

__all__ = [
    "FixupBasicBlock",
    "FixupBottleneck",
    "FixupResNet",
    "ModelLayout",
    "adapt_stem",
    "analysis_layers",
    "available_models",
    "build_model",
    "check_model_options",
    "fixup_factor",
    "imagenet_state",
    "imagenet_weights_path",
    "layout",
    "load_state",
    "model_options",
    "read_state",
    "register",
    "replace_head",
    "scalar_parameter_names",
    "set_layout",
    "transfer",
]
