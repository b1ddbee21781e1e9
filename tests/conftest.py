import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _cuda_emu_built() -> bool:
    import importlib.util

    return importlib.util.find_spec("optdiff._cuda_emu") is not None


@pytest.fixture(params=["cpu", "cuda-emu", "cuda"])
def backend(request):
    """Every backend the same tests run on: the CPU, the CUDA backend emulated on the CPU
    (built with OPTDIFF_CUDA_EMULATION=ON) and the CUDA backend on a GPU when one is present."""
    name = request.param
    if name == "cuda-emu" and not _cuda_emu_built():
        pytest.skip("optdiff._cuda_emu not built (configure with -DOPTDIFF_CUDA_EMULATION=ON)")
    if name == "cuda":
        from optdiff.optics.backends.cuda import cuda_device_count, cuda_unavailable_reason

        if cuda_device_count() == 0:
            pytest.skip(f"no CUDA device: {cuda_unavailable_reason()}")
    return name
