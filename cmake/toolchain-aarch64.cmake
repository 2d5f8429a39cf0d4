# Cross-compile for 64-bit ARM Linux with Debian's cross toolchain (apt: gcc-aarch64-linux-gnu
# g++-aarch64-linux-gnu; run the result with qemu-user: qemu-aarch64 -L /usr/aarch64-linux-gnu).
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(ALIGNTS_CROSS_TRIPLE aarch64-linux-gnu CACHE STRING "GNU triple of the cross toolchain")
set(CMAKE_C_COMPILER ${ALIGNTS_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${ALIGNTS_CROSS_TRIPLE}-g++)
# the target's libraries and headers live in /usr/aarch64-linux-gnu on Debian; never pick up the host's
set(CMAKE_FIND_ROOT_PATH /usr/${ALIGNTS_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# ctest runs the test executables through qemu-user
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/${ALIGNTS_CROSS_TRIPLE})
