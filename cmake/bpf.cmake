# Transparent mode: the BPF object, its skeleton, and the loader's link flags.
# Included from the top CMakeLists.txt after the fl_steer library is defined.
#
# vmlinux.h is generated from the running kernel's BTF at build time and never
# committed; the skeleton embeds the object, so the daemon is a single binary.

find_program(FL_BPFTOOL bpftool PATHS /usr/sbin /sbin /usr/local/sbin)
find_program(FL_BPF_CLANG clang)
if(FL_BPFTOOL AND FL_BPF_CLANG)
  set(_fl_bpf_default ON)
else()
  set(_fl_bpf_default OFF)
endif()
option(FL_BPF "Build transparent mode (BPF programs, skeleton, loader)" ${_fl_bpf_default})
set(FL_VMLINUX_BTF /sys/kernel/btf/vmlinux CACHE FILEPATH "kernel BTF used to generate vmlinux.h")

if(NOT FL_BPF)
  message(STATUS "faultline: transparent mode (BPF) disabled; bpftool or clang not found or FL_BPF=OFF")
  return()
endif()
if(NOT FL_BPFTOOL OR NOT FL_BPF_CLANG)
  message(FATAL_ERROR "FL_BPF=ON needs bpftool and clang: apt-get install bpftool clang")
endif()
if(NOT EXISTS ${FL_VMLINUX_BTF})
  message(FATAL_ERROR "FL_BPF=ON needs ${FL_VMLINUX_BTF} (kernel built with CONFIG_DEBUG_INFO_BTF)")
endif()
pkg_check_modules(LIBBPF REQUIRED IMPORTED_TARGET libbpf)

set(FL_BPF_OUT ${CMAKE_BINARY_DIR}/bpf)
file(MAKE_DIRECTORY ${FL_BPF_OUT})

add_custom_command(
  OUTPUT ${FL_BPF_OUT}/vmlinux.h
  COMMAND sh -c "'${FL_BPFTOOL}' btf dump file '${FL_VMLINUX_BTF}' format c > vmlinux.h.tmp"
  COMMAND ${CMAKE_COMMAND} -E rename vmlinux.h.tmp vmlinux.h
  WORKING_DIRECTORY ${FL_BPF_OUT}
  COMMENT "Generating vmlinux.h from ${FL_VMLINUX_BTF}"
  VERBATIM)

# libbpf's bpf_helpers.h comes from the libbpf-dev include dir.
set(_fl_bpf_incs)
foreach(dir ${LIBBPF_INCLUDE_DIRS})
  list(APPEND _fl_bpf_incs -I${dir})
endforeach()

# Three objects: the egress hooks (faultline), the per-netns sk_lookup
# program (ingress) and the TCP iterator of existing: reset (reset). Each
# gets a skeleton; the loader shares the maps of shared_maps.h among them.
set(FL_BPF_SKELS)
foreach(obj faultline ingress reset)
  set(_src ${CMAKE_SOURCE_DIR}/bpf/${obj}.bpf.c)
  set(_o ${FL_BPF_OUT}/${obj}.bpf.o)
  set(_skel ${FL_BPF_OUT}/${obj}.skel.h)
  if(obj STREQUAL "faultline")
    set(_name faultline)
  else()
    set(_name fl_${obj})
  endif()
  add_custom_command(
    OUTPUT ${_o}
    COMMAND ${FL_BPF_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror
            -I${FL_BPF_OUT} -I${CMAKE_SOURCE_DIR}/bpf ${_fl_bpf_incs}
            -c ${_src} -o ${_o}
    DEPENDS ${_src} ${CMAKE_SOURCE_DIR}/bpf/faultline.h ${CMAKE_SOURCE_DIR}/bpf/shared_maps.h
            ${FL_BPF_OUT}/vmlinux.h
    COMMENT "Compiling BPF object ${obj}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${_skel}
    COMMAND sh -c "'${FL_BPFTOOL}' gen skeleton '${_o}' name ${_name} > ${obj}.skel.h.tmp"
    COMMAND ${CMAKE_COMMAND} -E rename ${obj}.skel.h.tmp ${obj}.skel.h
    DEPENDS ${_o}
    WORKING_DIRECTORY ${FL_BPF_OUT}
    COMMENT "Generating ${obj}.skel.h"
    VERBATIM)
  list(APPEND FL_BPF_SKELS ${_skel})
endforeach()
set(FL_BPF_SKEL ${FL_BPF_SKELS})

add_custom_target(fl_bpf_skel DEPENDS ${FL_BPF_SKEL})
add_dependencies(fl_steer fl_bpf_skel)
set_source_files_properties(${CMAKE_SOURCE_DIR}/src/steer/bpf.c PROPERTIES OBJECT_DEPENDS ${FL_BPF_SKEL})
target_include_directories(fl_steer PRIVATE ${FL_BPF_OUT})
target_compile_definitions(fl_steer PUBLIC FL_HAVE_BPF=1)
target_link_libraries(fl_steer PUBLIC PkgConfig::LIBBPF elf z)

# Standalone kernel-side test (test/bpf/run.sh drives it as root).
if(EXISTS ${CMAKE_SOURCE_DIR}/test/bpf/redirect_test.c)
  add_executable(fl_bpf_test ${CMAKE_SOURCE_DIR}/test/bpf/redirect_test.c)
  target_compile_options(fl_bpf_test PRIVATE ${FL_WARN})
  target_link_libraries(fl_bpf_test PRIVATE fl_steer)
endif()
