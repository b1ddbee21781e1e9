import os

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
        from optdiff.optics.backends.cuda import cuda_device_count, cuda_unavailable_reason, gpu_present

        if cuda_device_count() == 0:
            # A GPU is here (or one is required) but backend='cuda' cannot use it: a failure with
            # the stored reason, never a skip (issue 22, item 1).
            required = os.environ.get("OPTDIFF_REQUIRE_CUDA") == "1"
            evidence = gpu_present() or ("OPTDIFF_REQUIRE_CUDA=1" if required else "")
            if evidence:
                pytest.fail(f"a GPU is expected here ({evidence}) but backend='cuda' is unusable: "
                            f"{cuda_unavailable_reason()}", pytrace=False)
            pytest.skip(f"no CUDA device: {cuda_unavailable_reason()}")
    return name
