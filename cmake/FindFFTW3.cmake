# Finds FFTW3 in double and single precision (Debian: libfftw3-dev).
# Defines FFTW3::fftw3 and FFTW3::fftw3f. Stops with install advice if absent.
find_path(FFTW3_INCLUDE_DIR fftw3.h)
find_library(FFTW3_LIBRARY_DOUBLE NAMES fftw3)
find_library(FFTW3_LIBRARY_FLOAT NAMES fftw3f)

if(NOT FFTW3_INCLUDE_DIR OR NOT FFTW3_LIBRARY_DOUBLE OR NOT FFTW3_LIBRARY_FLOAT)
  message(FATAL_ERROR
    "optdiff needs FFTW3 (double and single precision) and did not find it.\n"
    "  Debian/Ubuntu:  sudo apt-get install libfftw3-dev\n"
    "  Fedora:         sudo dnf install fftw-devel\n"
    "  macOS:          brew install fftw\n"
    "  conda:          conda install -c conda-forge fftw\n"
    "or point CMake at it with -DCMAKE_PREFIX_PATH=/path/to/fftw.\n"
    "  found header: ${FFTW3_INCLUDE_DIR}\n"
    "  found double: ${FFTW3_LIBRARY_DOUBLE}\n"
    "  found float:  ${FFTW3_LIBRARY_FLOAT}")
endif()

set(FFTW3_FOUND TRUE)
foreach(_v IN ITEMS DOUBLE FLOAT)
  if(_v STREQUAL "DOUBLE")
    set(_t FFTW3::fftw3)
  else()
    set(_t FFTW3::fftw3f)
  endif()
  if(NOT TARGET ${_t})
    add_library(${_t} UNKNOWN IMPORTED)
    set_target_properties(${_t} PROPERTIES
      IMPORTED_LOCATION "${FFTW3_LIBRARY_${_v}}"
      INTERFACE_INCLUDE_DIRECTORIES "${FFTW3_INCLUDE_DIR}")
  endif()
endforeach()
mark_as_advanced(FFTW3_INCLUDE_DIR FFTW3_LIBRARY_DOUBLE FFTW3_LIBRARY_FLOAT)
