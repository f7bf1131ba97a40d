"""Runtime: load a bundle, pick a backend, run it through the one batching core.

Imports only numpy, pyyaml and (at first use) the chosen engine.
"""

from .loader import load
from .model import Model
from .stats import Stats

__all__ = ["load", "Model", "Stats"]
