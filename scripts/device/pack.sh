#!/usr/bin/env bash
# What the lent GPU machine lacks, packed here into .dev/ (git-ignored) for the device tool's `carry`: each call
# carries at most 64 MiB with the working tree (22.5 MiB), so the large pieces travel over several calls.
#
#   bash scripts/device/pack.sh [--ort] [DATA_CSV]        (DATA_CSV: ETTh1, default ../shared/data/ETT/ETTh1.csv)
#
# .dev/llama_src.tar.xz   llama-cpp-python's sdist with scripts/patch_llama.py applied, less its models, docs,
#                         tests and the backends other than CPU and CUDA (~3.4 MB; built there by remote.sh)
# .dev/wheels/            gguf and diskcache: alignts' and llama-cpp-python's pure-Python needs the image lacks
# .dev/b/                 tiny Internal and Bridging bundles (ETTh1, L=96, H=24; the Injective one, from the
#                         shipped numeric LM, is made there: it would take 17 MB of a call)
# .dev/ort.p1 .. p5       (--ort) onnxruntime-gpu 1.31.1's module without TensorRT and the C API, xz, in parts
#                         of <= 37.6 MiB (the machine has xz, not zstd), and .dev/ort.sha256
# results/cuda/README.md says which call carries what.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cache=${ALIGNTS_CACHE:-$HOME/.cache/alignts}
py=${ALIGNTS_VENV:-$cache/venv}/bin/python
ort=0
[ "${1:-}" = "--ort" ] && { ort=1; shift; }
data=${1:-$root/../shared/data/ETT/ETTh1.csv}
[ -f "$data" ] || { echo "pack: no data at $data; pass the ETTh1 CSV as the last argument" >&2; exit 2; }
dev=.dev
mkdir -p "$dev/wheels"  # .gitignore has /.dev/: the device tool carries ignored paths only
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dl=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64)

echo "[pack] llama-cpp-python source, patched"
sdist=$(ls "$cache"/wheels/*.src/llama_cpp_python-0.3.36.tar.gz 2>/dev/null | head -1 || true)
if [ -z "$sdist" ]; then
    "$py" -m pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$tmp"
    sdist=$(ls "$tmp"/llama_cpp_python-0.3.36.tar.gz)
fi
mkdir "$tmp/src" && tar xzf "$sdist" -C "$tmp/src" --strip-components=1
"$py" scripts/patch_llama.py "$tmp/src" >/dev/null
v=vendor/llama.cpp
(cd "$tmp/src" && rm -rf .git $v/.git $v/models $v/docs $v/benches $v/conversion $v/tests $v/tools $v/examples \
        examples docker docs \
    && find $v/ggml/src -maxdepth 1 -type d -name 'ggml-*' ! -name ggml-cpu ! -name ggml-cuda -exec rm -rf {} + \
    && tar cJf "$root/$dev/llama_src.tar.xz" .)

echo "[pack] wheels"
"${dl[@]}" -d "$dev/wheels" gguf==0.19.0 diskcache==5.6.3

echo "[pack] tiny Internal and Bridging bundles (ETTh1 at $data)"
rm -rf "$dev/b" && mkdir -p "$dev/b"
fit=("$py" -m alignts fit)
common=(--data "$data" --context 96 --horizon 24 --epochs 1 --max-train-windows 64 --max-val-windows 32 --threads 2)
"${fit[@]}" internal "${common[@]}" --out "$dev/b/int_tinybert" --backbone tiny-bert >"$tmp/fit.log" 2>&1
"${fit[@]}" internal "${common[@]}" --out "$dev/b/int_tinygpt2" --backbone tiny-gpt2 --linear-skip >>"$tmp/fit.log" 2>&1
"${fit[@]}" bridging "${common[@]}" --out "$dev/b/brg_tinybert" --backbone tiny-bert --d-ff 32 >>"$tmp/fit.log" 2>&1

if [ $ort = 1 ]; then
    echo "[pack] onnxruntime-gpu 1.31.1 in parts"
    "${dl[@]}" -d "$tmp" onnxruntime-gpu==1.31.1
    mkdir "$tmp/ort" && (cd "$tmp/ort" && unzip -q "$tmp"/onnxruntime_gpu-*.whl \
        && rm -rf onnxruntime/capi/libonnxruntime_providers_tensorrt.so onnxruntime/capi/libonnxruntime.so.* \
                  onnxruntime/tools onnxruntime/ThirdPartyNotices.txt \
        && tar cf - onnxruntime onnxruntime_gpu-*.dist-info | xz -9 -T0 > "$tmp/ort.tar.xz")
    (cd "$tmp" && sha256sum ort.tar.xz) > "$dev/ort.sha256"
    rm -f "$dev"/ort.p?
    split -b 37M -d -a 1 --numeric-suffixes=1 "$tmp/ort.tar.xz" "$dev/ort.p"
fi
du -sh "$dev"/* | sed 's/^/[pack] /'
