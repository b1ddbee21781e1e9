"""Forward-Forward training (Hinton 2022) of digital and optical networks.

Each trainable layer learns from a local loss on the "goodness" of its own output (high for
positive data: an image with its correct label embedded; low for negative data: the same image
with a wrong label), so nothing is backpropagated between layers, and a fixed optical transform
between two layers only has to be repeatable, not differentiable.

Modules (NumPy unless noted; torch is the optional extra for the conv/FC layers, imported lazily):

* :mod:`.goodness`   goodness ``sum y^2`` and the logistic loss, with checks of the threshold.
* :mod:`.labels`     label embedding (Hinton's one-hot pixels, or a per-class pattern).
* :mod:`.optical`    optical transforms: the project's free-space phase stack with a camera, and a
  multimode-fibre model (phase-encoded SLM, seeded unitary transmission matrix, optional Kerr).
* :mod:`.readout`    ridge read-out on layer-normalised activities.
* :mod:`.network`    (torch) FF layers, optical blocks, training step, inference.
* :mod:`.baselines`  (torch) backprop 2conv+FC and LeNet-5.
* :mod:`.costs`      parameter and FLOP counts.
* :mod:`.config`     the ``optdiff ff-train`` TOML configuration.
* :mod:`.trainer`    epochs, checkpoints, resume, NaN stop, results.
* :mod:`.odu_ff`     Forward-Forward for the ODU's own phase layers, against adjoint training.
* :mod:`.data`       the MNIST 32x32 split of the reference comparison.
"""

from .goodness import check_threshold, ff_loss, ff_loss_grad, goodness
from .labels import embed_labels, neutral_embedding
from .optical import FibreTransform, FreeSpaceTransform, haar_unitary
from .readout import RidgeReadout

__all__ = ["goodness", "ff_loss", "ff_loss_grad", "check_threshold", "embed_labels", "neutral_embedding",
           "FreeSpaceTransform", "FibreTransform", "haar_unitary", "RidgeReadout"]
