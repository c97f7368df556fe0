# The replay memory's pybind11 module, tfdqn_ops/_replay*.so.
#
# Included by the top-level CMakeLists.txt after find_package(pybind11 CONFIG
# REQUIRED); TFDQN_OUTPUT_DIR is where the package's compiled files go.
# The core (replay_memory.cc: the memory; replay_file.cc: save and load; xoshiro256.cc,
# xxh64.cc: its random numbers and checksum) is plain C++17 without Python or TensorFlow.

pybind11_add_module(_replay MODULE
  ${CMAKE_CURRENT_LIST_DIR}/replay_memory.cc
  ${CMAKE_CURRENT_LIST_DIR}/replay_file.cc
  ${CMAKE_CURRENT_LIST_DIR}/xoshiro256.cc
  ${CMAKE_CURRENT_LIST_DIR}/xxh64.cc
  ${CMAKE_CURRENT_LIST_DIR}/replay_bindings.cc
)
target_include_directories(_replay PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_compile_features(_replay PRIVATE cxx_std_17)
# -O3 regardless of the build type: sampling is a tight copy loop.
target_compile_options(_replay PRIVATE -O3 -Wall -Wextra)
set_target_properties(_replay PROPERTIES
  CXX_VISIBILITY_PRESET hidden
  LIBRARY_OUTPUT_DIRECTORY "${TFDQN_OUTPUT_DIR}"
)
# Multi-config generators append the configuration to LIBRARY_OUTPUT_DIRECTORY
# unless the per-config properties are set as well.
foreach(_tfdqn_cfg Debug Release RelWithDebInfo MinSizeRel)
  string(TOUPPER ${_tfdqn_cfg} _tfdqn_cfg_upper)
  set_target_properties(_replay PROPERTIES
    LIBRARY_OUTPUT_DIRECTORY_${_tfdqn_cfg_upper} "${TFDQN_OUTPUT_DIR}")
endforeach()
