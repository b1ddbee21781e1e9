"""The optical super-network: L mask positions, K candidate phase masks at each, and a "skip".

A *path* is one choice per position: a candidate index ``0..K-1`` or :data:`SKIP` (no mask: the
light crosses that plane unchanged, so the position is plain free propagation). Every path runs
through one :class:`~optdiff.odu.ODU` geometry (encoding, L hops, camera, binning): a skipped
position is a zero phase, which is exactly free propagation, so one phase stack serves every
path. Gradients for the masks on a path come from the core's exact adjoint
(``PhaseStack.backward``) and are handed back per mask ``(position, candidate)``; masks off the
path get none.

A path of skips only is refused: it has no mask, so nothing optical to train or to share.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..config import OpticsConfig
from ..odu import ODU, init_phases

__all__ = ["SKIP", "SuperNet", "format_path", "distinct_masks"]

#: The path entry meaning "no mask at this position" (free propagation).
SKIP = -1


def format_path(path: Sequence[int]) -> str:
    """``"m0 . m1"``-style text of a path: ``mK`` a candidate, ``.`` a skip."""
    return " ".join("." if c == SKIP else f"m{c}" for c in path)


def distinct_masks(paths: Iterable[Sequence[int]]) -> list[tuple[int, int]]:
    """The masks ``(position, candidate)`` used by any of ``paths``, sorted."""
    return sorted({(pos, c) for p in paths for pos, c in enumerate(p) if c != SKIP})


class SuperNet:
    """K candidate masks at each of L positions (``optics.layers``), shared by every domain.

    Parameters
    ----------
    optics : OpticsConfig
        The geometry (``layers`` = L positions).
    image_size : int
        Side of every domain's images.
    candidates : int
        K >= 1 masks per position.
    skip : bool
        Whether a path may skip a position.
    seed : int
        Seed of the masks' initial phases (``optics.init`` plus its noise, one draw per candidate).
    precision : "single" or "double"
        float32 phases (training) or float64 (gradient checks).
    """

    def __init__(self, optics: OpticsConfig, image_size: int, candidates: int, skip: bool = True,
                 seed: int = 0, nthreads: int | None = None, precision: str = "single"):
        if not isinstance(candidates, (int, np.integer)) or isinstance(candidates, bool):
            raise TypeError(f"candidates must be an integer, got {candidates!r}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1 (got {candidates}): with no candidate mask every path is "
                             f"free propagation only, which has nothing to train")
        self.odu = ODU(optics, image_size, nthreads=nthreads, precision=precision)
        self.L, self.K, self.n = optics.layers, int(candidates), optics.n
        self.skip = bool(skip)
        rng = np.random.default_rng(seed)
        self.masks = np.empty((self.L, self.K, self.n, self.n), dtype=self.odu.rdtype)
        for k in range(self.K):
            self.masks[:, k] = init_phases(optics, rng=rng, image_size=image_size)
        self._zero = np.zeros((self.n, self.n), dtype=self.odu.rdtype)

    @property
    def choices(self) -> int:
        """Choices per position: K, plus one for the skip when allowed."""
        return self.K + (1 if self.skip else 0)

    def check_path(self, path, what: str = "path") -> tuple[int, ...]:
        """``path`` as a tuple of ints, or a ValueError saying what is wrong with it."""
        try:
            p = tuple(path)
        except TypeError:
            raise ValueError(f"{what} must be a sequence of {self.L} choices, got {path!r}") from None
        if len(p) != self.L:
            raise ValueError(f"{what} must have one choice per position ({self.L}), got {len(p)}: {p!r}")
        out = []
        for pos, c in enumerate(p):
            if not isinstance(c, (int, np.integer)) or isinstance(c, (bool, np.bool_)):
                raise ValueError(f"{what}[{pos}] must be an integer candidate index, got {c!r}")
            c = int(c)
            if c == SKIP and not self.skip:
                raise ValueError(f"{what}[{pos}] is a skip, but this super-network has no skip choice")
            if c != SKIP and not 0 <= c < self.K:
                raise ValueError(f"{what}[{pos}] = {c}: a candidate index must be in 0..{self.K - 1} "
                                 f"(or {SKIP} for a skip)")
            out.append(c)
        if all(c == SKIP for c in out):
            raise ValueError(f"{what} selects no layer (all {self.L} positions skipped): a path needs at least "
                             f"one mask; free propagation alone has nothing to train or share")
        return tuple(out)

    def path_phases(self, path) -> np.ndarray:
        """The ``[L, N, N]`` phases of a path (zero at skipped positions)."""
        p = self.check_path(path)
        return np.ascontiguousarray(np.stack([self._zero if c == SKIP else self.masks[pos, c]
                                              for pos, c in enumerate(p)]))

    def intensity(self, images: np.ndarray, path) -> np.ndarray:
        """Binned camera intensity ``[B, H, W]`` of ``images`` through ``path`` (no gradients)."""
        return self.odu.intensity(images, self.path_phases(path))

    def intensity_train(self, images: np.ndarray, path):
        """Binned intensity and the tape for :meth:`backward`."""
        return self.odu.intensity_train(images, self.path_phases(path))

    def backward(self, tape, g_binned: np.ndarray, path) -> dict:
        """``{(position, candidate): d loss / d mask}`` (float64 ``[N, N]``) for the masks on ``path``."""
        p = self.check_path(path)
        g = self.odu.backward(tape, g_binned)
        return {(pos, c): g[pos] for pos, c in enumerate(p) if c != SKIP}

    def mask_parameters(self, paths) -> int:
        """Phase pixels of the masks the paths use (the SLM area they need, in pixels)."""
        return len(distinct_masks(paths)) * self.n * self.n
