#!/usr/bin/env bash
# Build LabRecorder's command-line recorder (LabRecorderCLI) against the liblsl that pylsl ships,
# outside this repository: no LabRecorder or liblsl source is kept here. It needs the two
# repositories' sources (a git clone or a bare mirror of each) and g++ >= 10.
#   bash tools/labrecorder/build.sh LABRECORDER_GIT LIBLSL_GIT BUILD_DIR
# LABRECORDER_GIT: github.com/labstreaminglayer/App-LabRecorder (its src/ and xdfwriter/),
# LIBLSL_GIT: github.com/sccn/liblsl (its include/ only: the C++ API is header-only over the C one).
set -euo pipefail
lr=$1; lsl=$2; out=$3
mkdir -p "$out/src"
git --git-dir="$lr" archive HEAD src/clirecorder.cpp src/recording.cpp src/recording.h xdfwriter | tar -x -C "$out/src"
git --git-dir="$lsl" archive HEAD include | tar -x -C "$out/src"
libdir=$(python -c "import os, pylsl; print(os.path.join(os.path.dirname(pylsl.__file__), 'lib'))")
g++ -std=c++20 -O2 -I "$out/src/include" -I "$out/src/xdfwriter" -I "$out/src/src" \
    "$out/src/src/clirecorder.cpp" "$out/src/src/recording.cpp" "$out/src/xdfwriter/xdfwriter.cpp" \
    -L "$libdir" -l:liblsl.so.2 -Wl,-rpath,"$libdir" -pthread -o "$out/LabRecorderCLI"
echo "$out/LabRecorderCLI"
echo "LabRecorder $(git --git-dir="$lr" rev-parse HEAD), liblsl headers $(git --git-dir="$lsl" rev-parse HEAD)" > "$out/VERSION"
