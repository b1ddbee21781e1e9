"""The diffusion side: noise schedule, the time-aware optical model, samplers, Adam, the trainer
and its checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .model import MODEL_VERSION, TimeAwareODU, generate
from .optim import Adam, lr_at
from .samplers import ddim_sample, ddim_timesteps, ddpm_sample
from .schedule import NoiseSchedule, q_sample, set_index, timestep_sets
from .trainer import Trainer, TrainingError, load_model

__all__ = ["NoiseSchedule", "q_sample", "set_index", "timestep_sets", "TimeAwareODU", "generate",
           "MODEL_VERSION", "ddpm_sample", "ddim_sample", "ddim_timesteps", "Adam", "lr_at", "Trainer",
           "TrainingError", "load_model", "save_checkpoint", "load_checkpoint", "CheckpointError"]
