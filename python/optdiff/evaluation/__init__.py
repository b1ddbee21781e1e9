"""Evaluation: sample-quality metrics (FID, KID, IS, per-set eps-MSE, FID along the chain) in a
classifier's or Inception-v3's features, the baseline denoisers the optics are compared with
(least squares here; the FC network and U-Net in :mod:`.digital`, PyTorch), the speed and energy
table (:mod:`.costs`) and ``optdiff report`` (:mod:`.report`). Importing this package needs only
NumPy; the PyTorch parts are imported when used (``pip install optdiff[torch]``)."""

from .baselines import LinearDenoiser, ZeroPredictor, normalize_sets, per_set_mse
from .metrics import FeatureNet, fid_report, frechet_distance, inception_score, kid

__all__ = ["FeatureNet", "frechet_distance", "kid", "inception_score", "fid_report", "LinearDenoiser",
           "ZeroPredictor", "per_set_mse", "normalize_sets"]
