"""The trainer of the hardware modes: :class:`~optdiff.diffusion.Trainer` with the model's optics
replaced by a :class:`~.online.BenchODU` (forward on a capture device, backward through the twin or
the ideal model), the twin's state saved with every checkpoint, and a capture failure turned
into a clean stop: the step that failed is not applied, its random draws are rewound, a checkpoint
is written and :class:`~optdiff.diffusion.TrainingError` says what went wrong and how to resume.

Files besides the trainer's: ``hardware.json`` (mode, capture count, the twin's parameters and its
last discrepancy; read back on ``--resume``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..diffusion.trainer import Trainer, TrainingError, write_json_atomic
from .online import REFINE_IMAGES, BenchODU
from .twin import DigitalTwin

__all__ = ["HardwareTrainer", "HARDWARE_STATE"]

HARDWARE_STATE = "hardware.json"


class HardwareTrainer(Trainer):
    """Train with ``device`` in the loop in ``mode`` ``"online"`` or ``"experimental-backprop"``.

    ``twin``: the calibrated :class:`DigitalTwin` (online: the gradients; experimental-backprop: only
    its nominal photometry converts frames). ``refine_every``: online mode, an Adam step of the twin's
    parameters every that many training steps (0: never), from ``refine_images`` frames of the
    batch. Other arguments as for ``Trainer``.
    """

    def __init__(self, cfg, out_dir, device, mode: str, twin: DigitalTwin, *, exposure=None,
                 refine_every: int = 10, refine_lr: float = 0.02, refine_images: int = REFINE_IMAGES,
                 images=None, val_images=None, log=True):
        super().__init__(cfg, out_dir, images=images, val_images=val_images, log=log)
        self.mode = mode
        self.hw = BenchODU(self.model.odu, device, mode, twin, exposure=exposure, refine_every=refine_every,
                           refine_lr=refine_lr, refine_images=refine_images)
        self.model.odu = self.hw
        self._drawn = None

    def _batch(self, m: int):
        self._drawn = (self.step, self.rng.bit_generator.state)
        return super()._batch(m)

    def save(self) -> Path:
        path = super().save()
        write_json_atomic(self.out_dir / HARDWARE_STATE, self.hw.state())
        return path

    def restore(self, path=None) -> int:
        step = super().restore(path)
        state = self.out_dir / HARDWARE_STATE
        if state.exists():
            with open(state) as f:
                self.hw.load_state(json.load(f))
        return step

    def fit(self, resume=False, max_steps=None, progress=None) -> dict:
        try:
            return super().fit(resume=resume, max_steps=max_steps, progress=progress)
        except self.hw.failures as exc:
            if self._drawn is not None and self._drawn[0] == self.step:
                self.rng.bit_generator.state = self._drawn[1]     # the failed step's draws, rewound
            path = self.save()
            raise TrainingError(
                f"training stopped at step {self.step}: {exc}. Nothing is lost: {path} holds the model "
                f"after {self.step} steps (the failed step was not applied); fix the device and resume "
                f"with --resume") from exc
