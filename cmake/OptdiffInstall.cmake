# `cmake --install` rules for C++ users (component "cpp"): the public headers, the static
# libraries optdiff::core (CPU propagator, phase stacks, sampler) and optdiff::plan (the host
# planner it builds on), and a package config so another project writes
#
#     find_package(optdiff 0.1 REQUIRED)
#     target_link_libraries(sim PRIVATE optdiff::core)
#
# optdiff::core is static, so its private FFTW dependency travels with it as a link-only
# requirement: optdiffConfig.cmake finds FFTW3 (with the FindFFTW3.cmake installed beside it)
# and OpenMP (when built with it) before importing the targets.
include(CMakePackageConfigHelpers)

set(OPTDIFF_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/optdiff")

install(DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}/csrc/include/optdiff"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" COMPONENT cpp
        FILES_MATCHING PATTERN "*.hpp")
install(TARGETS optdiff_plan optdiff_core EXPORT optdiffTargets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT cpp
        INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT optdiffTargets NAMESPACE optdiff:: DESTINATION "${OPTDIFF_CMAKE_DIR}" COMPONENT cpp)

# Values the config template substitutes (@VAR@).
set(OPTDIFF_CONFIG_OPENMP ${OPTDIFF_OPENMP})
configure_package_config_file("${CMAKE_CURRENT_SOURCE_DIR}/cmake/optdiffConfig.cmake.in"
  "${CMAKE_CURRENT_BINARY_DIR}/optdiffConfig.cmake" INSTALL_DESTINATION "${OPTDIFF_CMAKE_DIR}")
# 0.x: a minor version may change the API, so only the same major.minor is compatible.
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/optdiffConfigVersion.cmake"
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/optdiffConfig.cmake"
              "${CMAKE_CURRENT_BINARY_DIR}/optdiffConfigVersion.cmake"
              "${CMAKE_CURRENT_SOURCE_DIR}/cmake/FindFFTW3.cmake"
        DESTINATION "${OPTDIFF_CMAKE_DIR}" COMPONENT cpp)
