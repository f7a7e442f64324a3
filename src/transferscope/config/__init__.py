"""The study config: its sections (:mod:`~transferscope.config.sections`), the whole study and
how a config file or preset is read (:mod:`~transferscope.config.study`), and the shipped presets
(``presets/*.yaml``). ``from transferscope import config`` offers all of it.
"""

from transferscope.config.sections import *  # noqa: F403
from transferscope.config.sections import __all__ as _sections
from transferscope.config.study import *  # noqa: F403
from transferscope.config.study import __all__ as _study

__all__ = [*_sections, *_study]
