# optdiff._jax_ffi: the XLA FFI handlers of optdiff.jax (csrc/python/jax_ffi.cpp).
# The XLA FFI headers ship with jaxlib (jax.ffi.include_dir()); AUTO builds the module when the
# build's Python imports jax, ON without them is an error, OFF skips it. OPTDIFF_JAX_INCLUDE_DIR
# points at the headers directly (e.g. for an isolated pip build: the folder holding xla/ffi/api).
set(OPTDIFF_JAX_STATUS "off")
if(OPTDIFF_JAX STREQUAL "OFF")
  return()
endif()

set(OPTDIFF_JAX_INCLUDE_DIR "" CACHE PATH "XLA FFI headers (jax.ffi.include_dir()); empty: ask the build's Python")
set(_optdiff_jax_inc "${OPTDIFF_JAX_INCLUDE_DIR}")
if(NOT _optdiff_jax_inc)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c "import jax.ffi; print(jax.ffi.include_dir(), end='')"
    OUTPUT_VARIABLE _optdiff_jax_detected ERROR_QUIET RESULT_VARIABLE _optdiff_jax_rc)
  if(_optdiff_jax_rc EQUAL 0)
    set(_optdiff_jax_inc "${_optdiff_jax_detected}")
  endif()
endif()

if(NOT _optdiff_jax_inc OR NOT EXISTS "${_optdiff_jax_inc}/xla/ffi/api/ffi.h")
  if(OPTDIFF_JAX STREQUAL "ON")
    message(FATAL_ERROR
      "OPTDIFF_JAX=ON but the XLA FFI headers were not found (looked in '${_optdiff_jax_inc}'): "
      "${Python_EXECUTABLE} cannot import jax.ffi (pip install 'jax>=0.4.31'), or pass "
      "-DOPTDIFF_JAX_INCLUDE_DIR=<jax.ffi.include_dir()>. (An isolated pip build does not see your "
      "environment's jax: use --no-build-isolation or -Ccmake.define.OPTDIFF_JAX_INCLUDE_DIR=...)")
  endif()
  # An isolated pip build cannot import the environment's jax: pass the headers' folder
  # (-Ccmake.define.OPTDIFF_JAX_INCLUDE_DIR=...) or build with --no-build-isolation.
  set(OPTDIFF_JAX_STATUS "off (no XLA FFI headers: set OPTDIFF_JAX_INCLUDE_DIR or install jax for ${Python_EXECUTABLE})")
  return()
endif()

pybind11_add_module(_jax_ffi MODULE ${CMAKE_CURRENT_SOURCE_DIR}/csrc/python/jax_ffi.cpp)
target_include_directories(_jax_ffi SYSTEM PRIVATE "${_optdiff_jax_inc}")
target_link_libraries(_jax_ffi PRIVATE optdiff_core)
target_compile_options(_jax_ffi PRIVATE -Wall -Wextra)
if(OPTDIFF_WERROR)
  target_compile_options(_jax_ffi PRIVATE -Werror)
endif()
# The module holds its own copy of the static core, so its FFTW planner lock is not optdiff._core's.
# FFTW's own planner lock (libfftw3_threads) makes planning safe across both copies in one process.
find_library(FFTW3_THREADS_LIBRARY_DOUBLE NAMES fftw3_threads)
find_library(FFTW3_THREADS_LIBRARY_FLOAT NAMES fftw3f_threads)
mark_as_advanced(FFTW3_THREADS_LIBRARY_DOUBLE FFTW3_THREADS_LIBRARY_FLOAT)
target_link_libraries(_jax_ffi PRIVATE FFTW3::fftw3 FFTW3::fftw3f)
if(FFTW3_THREADS_LIBRARY_DOUBLE AND FFTW3_THREADS_LIBRARY_FLOAT)
  target_link_libraries(_jax_ffi PRIVATE ${FFTW3_THREADS_LIBRARY_DOUBLE} ${FFTW3_THREADS_LIBRARY_FLOAT})
  target_compile_definitions(_jax_ffi PRIVATE OPTDIFF_FFTW_PLANNER_LOCK=1)
else()
  message(WARNING "libfftw3_threads not found: optdiff._jax_ffi and optdiff._core must not plan FFTs "
                  "from two threads at once (see docs/interop.md)")
endif()
optdiff_sanitize(_jax_ffi)
install(TARGETS _jax_ffi ${OPTDIFF_PY_INSTALL})
set(OPTDIFF_JAX_STATUS "on (${_optdiff_jax_inc})")
