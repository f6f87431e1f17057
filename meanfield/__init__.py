"""meanfield: two-layer networks as measures, trained by consensus-based optimization.

The public API is re-exported here; see README.md for the studies and the command line. Nothing
here imports xarray, matplotlib or numba, so that the command line answers at once: OT-CBO, whose
assignment solver is compiled, is imported on first use of ``meanfield.OTCBO``.
"""

__version__ = "0.5.2"

from meanfield.adam import Adam
from meanfield.cbo import CBO
from meanfield.consensus import consensus_point, gibbs_weights
from meanfield.hybrid import HybridCBOAdam
from meanfield.multitask import MultiTaskCBO
from meanfield.network import TwoLayerNetwork
from meanfield.noise import AnisotropicNoise, IsotropicNoise
from meanfield.problems import Problem, make_problem, mnist, shifted_sines, sine, square
from meanfield.schedules import Constant, EffectiveSampleSize, Step
from meanfield.train import train

__all__ = [
    "Adam", "AnisotropicNoise", "CBO", "Constant", "EffectiveSampleSize", "HybridCBOAdam", "IsotropicNoise",
    "MultiTaskCBO", "MultiTaskOTCBO", "OTCBO", "Problem", "Step", "TwoLayerNetwork", "consensus_point",
    "gibbs_weights", "make_problem", "mnist", "shifted_sines", "sine", "square", "train",
]

_LAZY = {"OTCBO": "meanfield.otcbo", "MultiTaskOTCBO": "meanfield.otcbo"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'meanfield' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
