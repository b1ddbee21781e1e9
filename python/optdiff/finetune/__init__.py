"""Reward finetuning of a trained optical diffusion model (PRDP and the DDPO baseline).

* :mod:`.policy`: the ODU sampler as a policy (transition log-probabilities and their exact
  gradients through the adjoint core).
* :mod:`.prdp`, :mod:`.ddpo`: the two objectives on one minibatch.
* :mod:`.rewards`: class probability, legibility, user callables; the checks on reward values.
* :mod:`.finetuner`: the online loop (rounds, checkpoints, resume, reward curve, FID).

See docs/finetune.md.
"""

from .finetuner import FinetuneConfig, FinetuneError, Finetuner
from .policy import ODUPolicy, Trajectories, parse_sets
from .rewards import RewardError, evaluate_reward, make_reward

__all__ = ["FinetuneConfig", "FinetuneError", "Finetuner", "ODUPolicy", "Trajectories", "parse_sets",
           "RewardError", "evaluate_reward", "make_reward"]
