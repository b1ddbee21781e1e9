// Array checks shared by both compiled modules (csrc/python/bindings.cpp and
// cuda/bindings_cuda.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace optdiff {
namespace python {

// The C++ loops and kernels read elements through typed pointers, which must
// be aligned to the element type (C++ and CUDA alike; a NumPy view made with
// np.frombuffer(buf, dtype, offset=1) is not: flags.aligned is False).
// Throws std::invalid_argument (ValueError) naming the argument.
inline void require_aligned(const void* data, std::size_t alignment, const char* name) {
    if (alignment > 1 && reinterpret_cast<std::uintptr_t>(data) % alignment != 0)
        throw std::invalid_argument(
            std::string(name) +
            " is not aligned: its data starts at an address that is not a multiple of " +
            std::to_string(alignment) +
            " bytes (e.g. a np.frombuffer view at an odd offset); pass an aligned copy (" + name +
            ".copy())");
}

}  // namespace python
}  // namespace optdiff
