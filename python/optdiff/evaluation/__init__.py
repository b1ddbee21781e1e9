"""Evaluation: image-quality metrics (FID/KID in a small classifier's features) and the digital
baseline denoisers the optics are compared with."""

from .baselines import LinearDenoiser, ZeroPredictor, normalize_sets, per_set_mse
from .metrics import FeatureNet, fid_report, frechet_distance, inception_score, kid

__all__ = ["FeatureNet", "frechet_distance", "kid", "inception_score", "fid_report", "LinearDenoiser",
           "ZeroPredictor", "per_set_mse", "normalize_sets"]
