"""meanfield: two-layer networks as measures, trained by consensus-based optimization.

The public API is re-exported here; see README.md for the studies and the command line. Nothing
here imports xarray, matplotlib or numba, so that the command line answers at once.
"""

__version__ = "0.4.0"

from meanfield.adam import Adam
from meanfield.cbo import CBO
from meanfield.consensus import consensus_point, gibbs_weights
from meanfield.network import TwoLayerNetwork
from meanfield.noise import AnisotropicNoise, IsotropicNoise
from meanfield.problems import Problem, make_problem, mnist, shifted_sines, sine, square
from meanfield.schedules import Constant, Step
from meanfield.train import train

__all__ = [
    "Adam", "AnisotropicNoise", "CBO", "Constant", "IsotropicNoise", "Problem", "Step",
    "TwoLayerNetwork", "consensus_point", "gibbs_weights", "make_problem", "mnist", "shifted_sines",
    "sine", "square", "train",
]
