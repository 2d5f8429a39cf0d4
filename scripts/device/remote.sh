#!/usr/bin/env bash
# Runs ON the lent GPU machine (the device tool's `run`, in the repository root), on what scripts/device/pack.sh
# put in .dev/. Calls must follow each other within ~30 s: /tmp survives only while the machine stays warm.
#
#   bash scripts/device/remote.sh build        start the CUDA build of llama-cpp-python, detached (~200 s, 16 cores)
#   bash scripts/device/remote.sh part N       keep .dev/ort.pN in /tmp/parts
#   bash scripts/device/remote.sh check [ort]  wait for the build, install into /tmp/site, run the checks into $OUT
#
# check: (1) a GGUF loaded in fresh processes, plain and with each suspect of the 2026-11-30 segfault taken
# away; (2) scripts/device/inj_logits.py (teacher-forced logits, CPU vs CUDA, f32 and f16 KV);
# (3) scripts/device_check.py over .dev/b (with `ort`: onnxruntime-gpu from the parts, every variant; without:
# the GGUF variants only, which need no onnxruntime-gpu); (4) the numba CUDA kernels (alignts bench kernels
# --device cuda, tests/test_kernels_cuda.py).
set -u
export PYTHONUNBUFFERED=1
root=$PWD
case "${1:-}" in
build)
    mkdir -p /tmp/parts
    cp .dev/llama_src.tar.xz /tmp/parts/
    setsid nohup bash -c '
        rm -rf /tmp/lsrc /tmp/lwheel; mkdir -p /tmp/lsrc /tmp/lwheel
        tar xJf /tmp/parts/llama_src.tar.xz -C /tmp/lsrc && cd /tmp/lsrc && date +%s > /tmp/build.t0
        # the README'"'"'s CUDA options; flash attention'"'"'s CUDA kernels left out (alignts runs it on the CPU only)
        CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DLLAVA_BUILD=OFF" \
            CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) python3 -m pip wheel --no-build-isolation --no-deps -w /tmp/lwheel . \
            > /tmp/build.log 2>&1
        echo $? > /tmp/build.rc.tmp; date +%s > /tmp/build.t1; mv /tmp/build.rc.tmp /tmp/build.rc' \
        > /dev/null 2>&1 < /dev/null &
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    lscpu | grep -E '^Model name|^CPU\(s\)'; grep -o -w -E 'avx512f|avx512_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' '
    echo; echo "build started" ;;
part)
    mkdir -p /tmp/parts && cp ".dev/ort.p$2" /tmp/parts/ && ls -la /tmp/parts ;;
check)
    t0=$(date +%s)
    while [ ! -f /tmp/build.rc ] && [ $(( $(date +%s) - t0 )) -lt 300 ]; do sleep 3; done
    echo "build rc $(cat /tmp/build.rc 2>/dev/null || echo none) in $(( $(cat /tmp/build.t1 2>/dev/null || date +%s) - $(cat /tmp/build.t0) )) s"
    grep -E ' error|Error:' /tmp/build.log | head -5
    site=/tmp/site; mkdir -p $site
    if [ "${2:-}" = ort ]; then
        cat /tmp/parts/ort.p? > /tmp/ort.tar.xz && (cd /tmp && sha256sum -c "$root/.dev/ort.sha256") || exit 1
        xz -dc /tmp/ort.tar.xz | tar xf - -C $site
        python3 -m pip uninstall -y -q onnxruntime  # the image's CPU build: alignts refuses both at once
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --target $site .dev/wheels/*.whl /tmp/lwheel/*.whl
    export PYTHONPATH=$site:$root
    mkdir -p "$OUT/d"
    # the Injective bundle from the shipped numeric LM, and its f16 weights upcast to f32 (inj_logits' reference)
    python3 -m alignts fit injective --out /tmp/inj_numeric --context 96 --horizon 24 --overwrite > /dev/null 2>&1
    python3 -c "from alignts.export.quantize import requantize_gguf as r
r('/tmp/inj_numeric/numeric_lm-f16.gguf', '/tmp/numeric_lm-f32.gguf', 'f32')" || echo "no Injective bundle"
    echo "== (1) a GGUF loaded in a fresh process each"
    gguf=alignts/assets/numeric_lm/numeric_lm-f16.gguf
    load="from alignts.runtime.backends.gguf import LlamaCppModel as M; M('$gguf', n_ctx=64, device=DEV).close(); print('loaded')"
    libs=$(python3 -c "import glob, os, nvidia; print(' '.join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], '*', 'lib', 'lib*.so*')) + glob.glob(os.path.join(list(nvidia.__path__)[0], 'cu13', 'lib', 'lib*.so*')))))" 2>/dev/null)
    pre="import ctypes; [ctypes.CDLL(p, mode=ctypes.RTLD_GLOBAL) for p in '''$libs'''.split() if any(k in p for k in ('cudart', 'cublas'))]"
    for dev in "'cpu'" "'cuda'"; do
        for how in plain pip_cuda_libs no_pinned torch_first; do
            case $how in
            plain) cmd="${load/DEV/$dev}"; envs="" ;;
            pip_cuda_libs) cmd="$pre; ${load/DEV/$dev}"; envs="" ;;
            no_pinned) cmd="${load/DEV/$dev}"; envs="GGML_CUDA_NO_PINNED=1" ;;
            torch_first) cmd="import torch; torch.zeros(1, device='cuda'); ${load/DEV/$dev}"; envs="" ;;
            esac
            out=$(env $envs timeout 60 python3 -c "$cmd" 2>&1); rc=$?
            echo "device=$dev $how: rc $rc $(echo "$out" | grep -E '^loaded|Error' | tail -1)"
        done
    done
    if command -v cuda-gdb >/dev/null; then
        cpu="'cpu'"
        timeout 120 cuda-gdb -batch -ex run -ex bt --args python3 -c "${load/DEV/$cpu}" > "$OUT/d/gdb.txt" 2>&1
        grep -E '^#[0-9]' "$OUT/d/gdb.txt" | head -25
    fi
    echo "== (2) Injective teacher-forced logits"
    timeout 180 python3 scripts/device/inj_logits.py /tmp/inj_numeric /tmp/numeric_lm-f32.gguf "$OUT/d" cpu,cuda \
        2>&1 | grep -E '^\{|^prompt|Error|Fatal' | tail -14
    echo "== (3) device_check"
    if [ "${2:-}" = ort ]; then
        which=(.dev/b/int_tinybert .dev/b/int_tinygpt2 .dev/b/brg_tinybert /tmp/inj_numeric)
    else  # Bridging's adapter is ONNX: on CUDA it needs onnxruntime-gpu
        which=(.dev/b/int_tinybert .dev/b/int_tinygpt2 /tmp/inj_numeric --backend gguf)
    fi
    timeout 240 python3 scripts/device_check.py "${which[@]}" --out "$OUT" --repeats 20 > "$OUT/d/device_check.log" 2>&1
    echo "device_check rc $?"; grep -v '^{' "$OUT/d/device_check.log" | grep '|' | tail -40
    echo "== (4) numba CUDA kernels"
    timeout 60 python3 -m alignts bench kernels --device cuda --json "$OUT/kernels.json" 2>&1 | grep -E '^\||ok|wrote' | tail -12
    timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_cuda.py 2>&1 | tail -1
    echo "total $(( $(date +%s) - t0 )) s" ;;
*)
    sed -n 2,12p "$0"; exit 2 ;;
esac
