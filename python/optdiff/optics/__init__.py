"""The optical core: free-space propagation, phase stacks with exact adjoints, the sampling step's
kernels, and the backends (CPU, CUDA) that run them. Needs only NumPy and the compiled core."""

from .backends import BACKENDS, available_backends, get_backend
from .backends.cpu import get_num_threads, set_num_threads, set_planner_effort
from .propagator import Propagator, propagate
from .sampling_step import ddpm_update, standard_normal
from .specs import METHODS, HopSpec, StackParamGrads, StackSpec
from .stack import PhaseStack, Tape

__all__ = ["Propagator", "PhaseStack", "Tape", "propagate", "METHODS", "HopSpec", "StackSpec", "StackParamGrads",
           "standard_normal", "ddpm_update", "get_backend", "available_backends", "BACKENDS",
           "set_num_threads", "get_num_threads", "set_planner_effort"]
