"""Inception-v3 features for the standard FID/KID/IS, from a weights file on disk (never downloaded).

The network is pytorch-fid's FID Inception (torchvision's Inception-v3 with the TensorFlow FID
graph's changes: average pools that exclude padding, a max pool in the last block, 1008
classes), loaded from the file pytorch-fid itself uses, ``pt_inception-2015-12-05-6726825d.pth``
(a state dict with torchvision's names). Two builders give the same network:

* ``backend="pytorch-fid"``: pytorch-fid's own ``InceptionV3`` (needs ``pytorch-fid`` and a
  working torchvision); its download hook is pointed at the file, nothing is fetched;
* ``backend="optdiff"``: the re-implementation below (PyTorch only), with the same layer names
  so the same file loads; ``tests/test_eval_inception.py`` checks it against pytorch-fid on
  random weights when pytorch-fid can be imported.

``backend="auto"`` takes pytorch-fid when it imports and optdiff's otherwise; the report says
which was used. Images ``[K, H, W]`` in [-1, 1] are mapped to [0, 1], repeated to 3 channels,
resized bilinearly to 299 x 299 and scaled to [-1, 1] (what pytorch-fid does); features are the
2048 pool3 activations, probabilities the softmax of the 1008 logits.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np

from .digital._torch import require_torch

torch = require_torch("Inception-v3 features (optdiff.evaluation.inception)")
nn = torch.nn
F = torch.nn.functional

__all__ = ["FIDInceptionV3", "InceptionFeatures", "load_inception", "save_random_inception",
           "pytorch_fid_available"]


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, bd, self.branch_pool(_avg(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), bd, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pool)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception-v3 (torchvision layer names): ``forward`` -> (pool3 [B, 2048], logits [B, 1008])."""

    def __init__(self, num_classes: int = 1008):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, max_pool=False), InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        pool = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        return pool, self.fc(pool)


def _load_state(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights file not found: {path} (nothing is downloaded; pass the "
                                f"pytorch-fid file pt_inception-2015-12-05-6726825d.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: whatever torch.load raises
        raise ValueError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {exc})"[:2000]) from None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise ValueError(f"{path}: not an Inception-v3 state dict (no 'fc.weight')")
    return state


def pytorch_fid_available() -> bool:
    """True when pytorch-fid (and the torchvision it needs) import cleanly."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pytorch_fid.inception  # noqa: F401
    except Exception:  # ImportError, or a torchvision built for another torch (RuntimeError)
        return False
    return True


class _PytorchFidNet(nn.Module):
    """pytorch-fid's ``InceptionV3`` (pool3 block) plus the fc layer, returning (pool3, logits)."""

    def __init__(self, state: dict):
        super().__init__()
        import pytorch_fid.inception as pfi

        @contextlib.contextmanager
        def from_disk():
            saved = pfi.load_state_dict_from_url
            pfi.load_state_dict_from_url = lambda *a, **k: state  # the file on disk, never the URL
            try:
                yield
            finally:
                pfi.load_state_dict_from_url = saved

        with from_disk():
            self.body = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=False,
                                        normalize_input=False, use_fid_inception=True)
        self.fc = nn.Linear(2048, state["fc.weight"].shape[0])
        self.fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})

    def forward(self, x):
        pool = torch.flatten(self.body(x)[0], 1)
        return pool, self.fc(pool)


class InceptionFeatures:
    """Feature space for the metrics (``features``: pool3 [K, 2048], ``predict_proba``: [K, 1008])."""

    name = "inception-v3"
    dataset = None  # made for no data set in particular
    #: side the images are resized to: 299 (the standard); tests may lower it (Inception needs >= 75)
    input_size = 299

    def __init__(self, net, backend: str, path: str, batch: int = 32):
        self.net, self.backend, self.path, self.batch = net.eval(), backend, str(path), int(batch)
        self._cache: dict = {}  # the last few inputs: features and probabilities come from one pass

    def _run(self, images):
        from .metrics import check_samples

        x = check_samples(images, what="images for Inception-v3")
        key = (x.shape, hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest())
        if key not in self._cache:
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = self._forward(x)
        return self._cache[key]

    def _forward(self, x):
        pools, logits = [], []
        with torch.no_grad():
            for i in range(0, x.shape[0], self.batch):
                b = torch.from_numpy(((x[i:i + self.batch] + 1.0) / 2.0).astype(np.float32))[:, None]
                b = F.interpolate(b.repeat(1, 3, 1, 1), size=(self.input_size,) * 2, mode="bilinear",
                                  align_corners=False)
                p, lg = self.net(2.0 * b - 1.0)
                pools.append(p.double())
                logits.append(lg.double())
        return torch.cat(pools).numpy(), torch.softmax(torch.cat(logits), dim=1).numpy()

    def features(self, images) -> np.ndarray:
        return self._run(images)[0]

    def predict_proba(self, images) -> np.ndarray:
        return self._run(images)[1]


def load_inception(path, backend: str = "auto", batch: int = 32) -> InceptionFeatures:
    """Inception-v3 features from the weights file ``path`` (see the module docstring)."""
    if backend not in ("auto", "pytorch-fid", "optdiff"):
        raise ValueError(f"backend must be 'auto', 'pytorch-fid' or 'optdiff', got {backend!r}")
    state = _load_state(path)
    if backend == "pytorch-fid" or (backend == "auto" and pytorch_fid_available()):
        if not pytorch_fid_available():
            raise ImportError("pytorch-fid (with a torchvision matching this torch) is not importable; "
                              "pip install pytorch-fid, or use backend='optdiff'")
        return InceptionFeatures(_PytorchFidNet(state), "pytorch-fid", path, batch)
    net = FIDInceptionV3(state["fc.weight"].shape[0])
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.startswith("AuxLogits.") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: not pytorch-fid's FID Inception weights (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    return InceptionFeatures(net, "optdiff", path, batch)


def save_random_inception(path, seed: int = 0) -> Path:
    """Write a randomly initialised FID Inception state dict (for tests: the real file's layout)."""
    torch.manual_seed(int(seed))
    net = FIDInceptionV3()
    for m in net.modules():  # BatchNorm statistics of one random batch, so activations stay of order 1
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.rand(4, 3, 160, 160) * 2 - 1)
    path = Path(path)
    torch.save(net.state_dict(), path)
    return path
