"""transferscope: what did my pre-trained model actually transfer?

Implements the studies of Neyshabur, Sedghi and Zhang, "What is being transferred in transfer
learning?" (NeurIPS 2020) on a user's own models and data. Every analysis is a function on plain
``torch.nn.Module`` objects and tensors; the study runner (``transferscope run``) strings them
together and writes a report.
"""

from transferscope.config import StudyConfig, load_preset
from transferscope.data.shuffle import block_shuffle, pixel_shuffle
from transferscope.errors import TransferscopeError

__version__ = "0.1.0"

__all__ = [
    "StudyConfig",
    "TransferscopeError",
    "__version__",
    "block_shuffle",
    "load_preset",
    "pixel_shuffle",
]
