# CUDA back end: the Python module optdiff._cuda (kernels in cuda/, cuFFT).
#
# Included by the top-level CMakeLists.txt when OPTDIFF_CUDA is AUTO or ON, or
# when OPTDIFF_CUDA_EMULATION is ON (which needs no CUDA at all).
#   AUTO: build it when a CUDA compiler and cuFFT are found, else report why not.
#   ON:   the same, but stop with instructions when something is missing.
# Sets OPTDIFF_CUDA_STATUS (one line for the configuration summary).
#
# cuFFT is looked up, in order:
#   1. OPTDIFF_CUFFT_ROOT if set (a directory with include/cufft.h and
#      lib/libcufft.so*; when set, nothing else is searched);
#   2. the CUDA toolkit (CUDA::cufft);
#   3. the nvidia-cufft pip wheel in the Python interpreter's site-packages
#      (nvidia/cu<major>/{include,lib}, also nvidia/cufft/ of older wheels).
#
# Other knobs:
#   OPTDIFF_CUDA_ARCHITECTURES  GPU code to embed (see below).
#   OPTDIFF_CUDA_EMULATION      also build optdiff._cuda_emu: the same host code
#                               and kernel bodies compiled for the CPU (no GPU,
#                               no nvcc, no cuFFT needed; FFTW stands in for
#                               cuFFT). Only for testing the back end's logic.

# Default GPU targets. CUDA 13 supports compute capability 7.5 and newer.
#   75-real  SASS for Turing (T4, RTX 20xx, Quadro RTX)
#   80-real  SASS for Ampere A100; cubins of major 8 also run on 8.6/8.7/8.9
#            (RTX 30xx, A10/A40, Jetson Orin, RTX 40xx/L4/L40)
#   90       SASS for Hopper + compute_90 PTX, which the driver JIT-compiles
#            once (then caches) for anything newer (Blackwell 10.x/12.x)
# The kernels are memory bound, so per-minor-architecture SASS buys nothing,
# and each extra architecture is another full device compile (CI has 2 cores).
# Use "native" to build only for the GPUs of the building machine.
set(OPTDIFF_CUDA_ARCHITECTURES "75-real;80-real;90" CACHE STRING
    "CUDA architectures for optdiff._cuda (CMAKE_CUDA_ARCHITECTURES syntax, e.g. native or 86)")
set(OPTDIFF_CUFFT_ROOT "" CACHE PATH
    "Directory holding include/cufft.h and lib/libcufft.so* (e.g. <site-packages>/nvidia/cu13)")
option(OPTDIFF_CUDA_EMULATION "Also build optdiff._cuda_emu (CUDA back end emulated on the CPU, for tests)" OFF)

set(_optdiff_cuda_sources_host
  ${CMAKE_CURRENT_LIST_DIR}/../cuda/bindings_cuda.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../cuda/optics.cpp)
get_filename_component(_optdiff_cuda_dir "${CMAKE_CURRENT_LIST_DIR}/../cuda" ABSOLUTE)
# Headers shared with the CPU module's bindings (hop tuples, array checks).
get_filename_component(_optdiff_python_dir "${CMAKE_CURRENT_LIST_DIR}/../csrc/python" ABSOLUTE)

# ---- optional CPU emulation module (independent of CUDA) -------------------
if(OPTDIFF_CUDA_EMULATION)
  if(NOT OPTDIFF_BUILD_PYTHON)
    message(FATAL_ERROR "OPTDIFF_CUDA_EMULATION=ON needs OPTDIFF_BUILD_PYTHON=ON")
  endif()
  pybind11_add_module(_cuda_emu MODULE
    ${_optdiff_cuda_dir}/bindings_cuda.cpp
    ${_optdiff_cuda_dir}/optics.cpp
    ${_optdiff_cuda_dir}/emulation/device_emu.cpp
    ${_optdiff_cuda_dir}/emulation/fft_emu.cpp
    ${_optdiff_cuda_dir}/emulation/kernels_emu.cpp)
  target_include_directories(_cuda_emu PRIVATE ${_optdiff_cuda_dir} ${_optdiff_python_dir})
  target_compile_definitions(_cuda_emu PRIVATE OPTDIFF_CUDA_EMULATION=1 OPTDIFF_CUDA_MODULE=_cuda_emu)
  # The planner, plus FFTW standing in for cuFFT (not the CPU core: like _cuda).
  target_link_libraries(_cuda_emu PRIVATE optdiff_plan FFTW3::fftw3 FFTW3::fftw3f)
  target_compile_options(_cuda_emu PRIVATE -Wall -Wextra)
  if(OPTDIFF_WERROR)
    target_compile_options(_cuda_emu PRIVATE -Werror)
  endif()
  optdiff_sanitize(_cuda_emu)
  install(TARGETS _cuda_emu ${OPTDIFF_PY_INSTALL})
endif()

# ---- is the real thing buildable? -----------------------------------------
if(OPTDIFF_CUDA STREQUAL "AUTO")
  set(_optdiff_cuda_required FALSE)
elseif(OPTDIFF_CUDA)
  set(_optdiff_cuda_required TRUE)
else()
  set(OPTDIFF_CUDA_STATUS "off (OPTDIFF_CUDA=${OPTDIFF_CUDA})")
  return()
endif()

# Records why the module is not built; fatal when OPTDIFF_CUDA=ON.
macro(_optdiff_cuda_unavailable reason advice)
  if(_optdiff_cuda_required)
    message(FATAL_ERROR
      "OPTDIFF_CUDA=ON but the CUDA module cannot be built: ${reason}.\n"
      "${advice}\n"
      "Configure with -DOPTDIFF_CUDA=AUTO (build it only when possible) or "
      "-DOPTDIFF_CUDA=OFF to build the CPU back end alone.")
  endif()
  set(OPTDIFF_CUDA_STATUS "off (${reason})")
  message(STATUS "optdiff: CUDA module not built: ${reason}")
  return()
endmacro()

string(CONCAT _optdiff_cufft_advice
  "Get cuFFT with one of:\n"
  "  pip install nvidia-cufft        (CUDA 13; installs <site-packages>/nvidia/cu13; for CUDA 12: nvidia-cufft-cu12)\n"
  "  the full CUDA toolkit           (https://developer.nvidia.com/cuda-downloads, includes libcufft)\n"
  "or point CMake at it: -DOPTDIFF_CUFFT_ROOT=<dir with include/cufft.h and lib/libcufft.so.N>")

if(NOT OPTDIFF_BUILD_PYTHON)
  _optdiff_cuda_unavailable("OPTDIFF_BUILD_PYTHON is OFF (the CUDA back end is a Python module)"
                            "Configure with -DOPTDIFF_BUILD_PYTHON=ON.")
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  _optdiff_cuda_unavailable("no CUDA compiler (nvcc) found"
    "Install the CUDA toolkit (nvcc) and put it on PATH, or pass -DCMAKE_CUDA_COMPILER=/path/to/nvcc.")
endif()

# The toolkit that goes with that compiler (headers, static cudart, maybe cuFFT).
if(NOT CUDAToolkit_ROOT AND NOT DEFINED ENV{CUDAToolkit_ROOT})
  get_filename_component(_optdiff_nvcc "${CMAKE_CUDA_COMPILER}" REALPATH)
  get_filename_component(_optdiff_nvcc_dir "${_optdiff_nvcc}" DIRECTORY)
  get_filename_component(CUDAToolkit_ROOT "${_optdiff_nvcc_dir}/.." ABSOLUTE)
endif()
find_package(CUDAToolkit QUIET)
if(NOT CUDAToolkit_FOUND OR NOT TARGET CUDA::cudart_static)
  _optdiff_cuda_unavailable("the CUDA toolkit next to ${CMAKE_CUDA_COMPILER} is incomplete (no static cudart)"
    "Install the CUDA toolkit's runtime development files (cuda-cudart-dev) or set CUDAToolkit_ROOT.")
endif()

# ---- cuFFT ------------------------------------------------------------------
set(_optdiff_cufft_origin "")
set(_optdiff_cufft_names cufft libcufft.so.12 libcufft.so.11)

unset(_optdiff_cufft_include)
unset(_optdiff_cufft_library)
if(OPTDIFF_CUFFT_ROOT)
  find_path(_optdiff_cufft_include cufft.h PATHS "${OPTDIFF_CUFFT_ROOT}/include"
            NO_DEFAULT_PATH NO_CACHE)
  find_library(_optdiff_cufft_library NAMES ${_optdiff_cufft_names}
               PATHS "${OPTDIFF_CUFFT_ROOT}/lib" "${OPTDIFF_CUFFT_ROOT}/lib64"
               NO_DEFAULT_PATH NO_CACHE)
  if(NOT _optdiff_cufft_include OR NOT _optdiff_cufft_library)
    _optdiff_cuda_unavailable(
      "cuFFT not found under OPTDIFF_CUFFT_ROOT=${OPTDIFF_CUFFT_ROOT} (need include/cufft.h and lib/libcufft.so*)"
      "${_optdiff_cufft_advice}")
  endif()
  set(_optdiff_cufft_origin "OPTDIFF_CUFFT_ROOT")
elseif(TARGET CUDA::cufft)
  get_target_property(_optdiff_cufft_library CUDA::cufft IMPORTED_LOCATION)
  set(_optdiff_cufft_include "${CUDAToolkit_INCLUDE_DIRS}")
  set(_optdiff_cufft_origin "CUDA toolkit")
else()
  # The nvidia-cufft wheel: ask the interpreter where its packages live.
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import site, sysconfig\nd = [sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']]\nd += list(getattr(site, 'getsitepackages', lambda: [])())\nd.append(site.getusersitepackages())\nprint(';'.join(dict.fromkeys(x for x in d if x)))"
    OUTPUT_VARIABLE _optdiff_site_dirs
    OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _optdiff_site_rc
    ERROR_QUIET)
  if(NOT _optdiff_site_rc EQUAL 0)
    set(_optdiff_site_dirs "")
  endif()
  set(_optdiff_wheel_subdirs "nvidia/cu${CUDAToolkit_VERSION_MAJOR}" nvidia/cu13 nvidia/cu12 nvidia/cufft)
  list(REMOVE_DUPLICATES _optdiff_wheel_subdirs)
  foreach(_sp IN LISTS _optdiff_site_dirs)
    foreach(_sub IN LISTS _optdiff_wheel_subdirs)
      if(_optdiff_cufft_library)
        break()
      endif()
      if(EXISTS "${_sp}/${_sub}/include/cufft.h")
        unset(_optdiff_cufft_library)
        find_library(_optdiff_cufft_library NAMES ${_optdiff_cufft_names}
                     PATHS "${_sp}/${_sub}/lib" NO_DEFAULT_PATH NO_CACHE)
        if(_optdiff_cufft_library)
          set(_optdiff_cufft_include "${_sp}/${_sub}/include")
          set(_optdiff_cufft_origin "pip wheel (${_sub})")
          set(_optdiff_cufft_wheel_subdir "${_sub}")
        endif()
      endif()
    endforeach()
  endforeach()
  if(NOT _optdiff_cufft_library)
    _optdiff_cuda_unavailable(
      "cuFFT not found (not in the CUDA toolkit at ${CUDAToolkit_LIBRARY_DIR}, no nvidia-cufft wheel for ${Python_EXECUTABLE})"
      "${_optdiff_cufft_advice}")
  endif()
endif()
get_filename_component(_optdiff_cufft_libdir "${_optdiff_cufft_library}" DIRECTORY)

# The soname the module will record as NEEDED (libcufft.so.12 from CUDA 13's
# cuFFT, libcufft.so.11 from CUDA 12's): written next to the module (_cuda_cufft.txt) so that
# optdiff.optics.backends.cuda preloads exactly that file before the import
# (the RUNPATH holds this machine's absolute directory).
unset(_optdiff_cufft_soname)
if(CMAKE_READELF)
  execute_process(COMMAND "${CMAKE_READELF}" -d "${_optdiff_cufft_library}"
                  OUTPUT_VARIABLE _optdiff_cufft_dyn ERROR_QUIET RESULT_VARIABLE _optdiff_rc)
  if(_optdiff_rc EQUAL 0 AND _optdiff_cufft_dyn MATCHES "\\(SONAME\\)[^[]*\\[([^]]+)\\]")
    set(_optdiff_cufft_soname "${CMAKE_MATCH_1}")
  endif()
endif()
if(NOT _optdiff_cufft_soname)
  # No readelf: the versioned file name (libcufft.so.12.x.y -> libcufft.so.12).
  get_filename_component(_optdiff_cufft_real "${_optdiff_cufft_library}" REALPATH)
  get_filename_component(_optdiff_cufft_real "${_optdiff_cufft_real}" NAME)
  if(_optdiff_cufft_real MATCHES "^(libcufft\\.so\\.[0-9]+)")
    set(_optdiff_cufft_soname "${CMAKE_MATCH_1}")
  else()
    _optdiff_cuda_unavailable("cannot tell the soname of ${_optdiff_cufft_library}"
      "Point OPTDIFF_CUFFT_ROOT at a directory holding libcufft.so.<major>.")
  endif()
endif()
set(_optdiff_cufft_record "${CMAKE_CURRENT_BINARY_DIR}/_cuda_cufft.txt")
file(WRITE "${_optdiff_cufft_record}"
  "# written by cmake/OptdiffCUDA.cmake at configure time; read by optdiff.optics.backends.cuda\n"
  "soname=${_optdiff_cufft_soname}\n"
  "libdir=${_optdiff_cufft_libdir}\n"
  "cuda_major=${CUDAToolkit_VERSION_MAJOR}\n"
  "cuda_version=${CUDAToolkit_VERSION}\n"
  "origin=${_optdiff_cufft_origin}\n")

# ---- everything is there: build the module -------------------------------
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "${OPTDIFF_CUDA_ARCHITECTURES}")
endif()
set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
enable_language(CUDA)

if(NOT TARGET optdiff::cufft)
  add_library(optdiff::cufft SHARED IMPORTED)
  set_target_properties(optdiff::cufft PROPERTIES
    IMPORTED_LOCATION "${_optdiff_cufft_library}"
    INTERFACE_INCLUDE_DIRECTORIES "${_optdiff_cufft_include}")
endif()

# Kernels: the only nvcc translation unit; everything else is host C++.
add_library(optdiff_cuda_kernels OBJECT ${_optdiff_cuda_dir}/kernels.cu)
target_include_directories(optdiff_cuda_kernels PRIVATE ${_optdiff_cuda_dir}
                           ${CMAKE_CURRENT_SOURCE_DIR}/csrc/include)
set_target_properties(optdiff_cuda_kernels PROPERTIES
  CUDA_ARCHITECTURES "${OPTDIFF_CUDA_ARCHITECTURES}"
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  CUDA_RUNTIME_LIBRARY Static
  CUDA_VISIBILITY_PRESET hidden
  POSITION_INDEPENDENT_CODE ON)
# No --use_fast_math: sin/cos and divisions must match the CPU back end.
target_compile_options(optdiff_cuda_kernels PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)
if(OPTDIFF_WERROR)
  target_compile_options(optdiff_cuda_kernels PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings -Xcompiler=-Werror>)
endif()

pybind11_add_module(_cuda MODULE
  ${_optdiff_cuda_dir}/bindings_cuda.cpp
  ${_optdiff_cuda_dir}/optics.cpp
  ${_optdiff_cuda_dir}/device.cpp
  ${_optdiff_cuda_dir}/fft_cufft.cpp
  $<TARGET_OBJECTS:optdiff_cuda_kernels>)
target_include_directories(_cuda PRIVATE ${_optdiff_cuda_dir} ${_optdiff_python_dir})
# Only the planner from csrc/: the module must not load FFTW or OpenMP
# (tests/test_build_deps.py checks its NEEDED entries).
target_link_libraries(_cuda PRIVATE optdiff_plan CUDA::cudart_static optdiff::cufft)
set_target_properties(_cuda PROPERTIES
  LINKER_LANGUAGE CXX
  CUDA_RUNTIME_LIBRARY Static
  # libcufft.so.N is found through the absolute directory it was built
  # against, the wheel layout next to the package, and (at import time)
  # optdiff.cuda_backend's ctypes preload of the wheel's copy.
  BUILD_RPATH "${_optdiff_cufft_libdir}"
  INSTALL_RPATH "$ORIGIN/../nvidia/cu${CUDAToolkit_VERSION_MAJOR}/lib;${_optdiff_cufft_libdir}")
target_compile_options(_cuda PRIVATE -Wall -Wextra)
if(OPTDIFF_WERROR)
  target_compile_options(_cuda PRIVATE -Werror)
endif()
install(TARGETS _cuda ${OPTDIFF_PY_INSTALL})
# The cuFFT record goes where the module goes (the wheel's package folder).
if(DEFINED OPTDIFF_PY_INSTALL)
  install(FILES "${_optdiff_cufft_record}" ${OPTDIFF_PY_INSTALL})
else()
  install(FILES "${_optdiff_cufft_record}" DESTINATION .)
endif()

set(OPTDIFF_CUDA_STATUS
  "on (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, archs ${OPTDIFF_CUDA_ARCHITECTURES}, cuFFT from ${_optdiff_cufft_origin}: ${_optdiff_cufft_library}, soname ${_optdiff_cufft_soname})")
