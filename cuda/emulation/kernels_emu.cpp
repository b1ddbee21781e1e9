// The CUDA kernels compiled as host code (see `launch` in kernels.cu).
#include "../kernels.cu"
