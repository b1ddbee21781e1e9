"""The physical bench: its parts (DMD, SLM, folded propagation, camera) with their imperfections,
the Bench that composes them, an emulated experiment with hidden errors, the capture interface a
lab implements for its own hardware, the calibration patterns, the digital twin (a differentiable
bench with learnable physical parameters), its calibration, and the optics of the hardware training
modes (:mod:`.online`; the trainer is :mod:`optdiff.hardware.trainer`). See ``docs/hardware.md``."""

from .bench import Bench
from .calibrate import CalibrationReport, calibrate_device, compare_with_truth
from .calibration import CalibrationSet, capture_calibration, pi_patch_squares, squares_to_levels
from .camera import Camera
from .config import BenchConfig, bench_config_to_toml, load_bench_config
from .dmd import DMD, bayer_matrix
from .emulated import EmulatedExperiment, HiddenErrors
from .fit import discrepancy, fit_twin
from .fold import FoldedPropagation, FoldLayout
from .online import MODES, BenchODU
from .protocol import CaptureDevice, CaptureError, capture_frames
from .slm import SLM
from .twin import DigitalTwin
from .twin_params import TwinParams

__all__ = ["Bench", "BenchConfig", "DMD", "SLM", "FoldedPropagation", "FoldLayout", "Camera",
           "CaptureDevice", "CaptureError", "capture_frames", "load_bench_config",
           "bench_config_to_toml", "bayer_matrix", "EmulatedExperiment", "HiddenErrors", "CalibrationSet",
           "capture_calibration", "pi_patch_squares", "squares_to_levels", "DigitalTwin", "TwinParams",
           "fit_twin", "discrepancy", "calibrate_device", "compare_with_truth", "CalibrationReport", "BenchODU",
           "MODES"]
