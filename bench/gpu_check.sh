#!/usr/bin/env bash
# GPU check of the native Mamba block (issue 3), in one self-timing call on a CUDA machine.
#
# Needs .gpu/ (gitignored; carry it to the machine): the sdists mamba_ssm-2.2.2 (the protocol's
# Python), mamba_ssm-2.2.6.post3 + causal_conv1d-1.5.3.post1 (the oldest with csrc in the sdist and
# CUDA 13 arch handling), and small helper wheels (einops, ninja, pytest, wheel). No internet used.
#
#   1. helper wheels unpacked onto PYTHONPATH/PATH where the machine lacks them
#   2. background: build the kernels in place (sm_90 only, C++20 for torch >= 2.10), hard timeout
#   3. parity vs mamba_ssm's own Mamba (slow path, its selective_scan_ref, stub kernels)
#   4. timing of our block on the GPU (paper shapes + 2048 x 200) vs a 1-head attention block
#   5. if the build finished: pytest tests/gpu -m gpu against the fused kernels, and their timing
# Everything lands in $OUT (default ./gpu-out): *.json, *.log, summary.json.
#
# Example: OUT=/tmp/gpu-out bash bench/gpu_check.sh
set -u
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)
DEADLINE=$((T0 + ${TOTAL_LIMIT:-560}))  # the whole script ends by then (device calls: 600 s)
BUILD_LIMIT=${BUILD_LIMIT:-400}
SHAPES=${SHAPES:-}  # default: 256x50,64x200,2048x200
PY=${PYTHON:-python3}
GPU=$PWD/.gpu
WORK=$GPU/work  # fresh extraction, builds happen here
log() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$OUT/steps.log"; }
left() { echo $((DEADLINE - $(date +%s))); }

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

{
  nvidia-smi || true
  nvcc --version || true
  $PY -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, \
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')"
  nproc
} >"$OUT/env.txt" 2>&1
log "env: $(tail -2 "$OUT/env.txt" | tr '\n' ' ')"

# 1. helper wheels: only where the machine lacks the module (system packages take precedence)
rm -rf "$WORK" && mkdir -p "$WORK/site" "$WORK/src"
for spec in einops:einops pytest:pytest pluggy:pluggy iniconfig:iniconfig packaging:packaging \
  pygments:pygments wheel:wheel; do
  mod=${spec%%:*}
  whl=$(ls "$GPU"/wheels/"${spec##*:}"-*.whl 2>/dev/null | head -1)
  if ! $PY -c "import $mod" 2>/dev/null && [ -n "$whl" ]; then
    $PY -m zipfile -e "$whl" "$WORK/site" && log "unpacked $(basename "$whl")"
  fi
done
if ! command -v ninja >/dev/null; then
  $PY -m zipfile -e "$GPU"/wheels/ninja-*.whl "$WORK/ninja" && chmod +x "$WORK"/ninja/ninja-*.data/scripts/ninja
  export PATH="$(echo "$WORK"/ninja/ninja-*.data/scripts):$PATH"
  log "ninja from wheel: $(ninja --version 2>&1)"
fi
export PYTHONPATH="$PYTHONPATH:$WORK/site"
for f in "$GPU"/*.tar.gz; do tar xzf "$f" -C "$WORK/src"; done
MSRC=$WORK/src/mamba_ssm-2.2.6.post3
CSRC=$WORK/src/causal_conv1d-1.5.3.post1
PSRC=$WORK/src/mamba_ssm-2.2.2

# 2. background build: patch the arch list to sm_90, C++17 -> C++20 (torch's headers need it),
#    and a setuptools fallback for wheel.bdist_wheel.
patch_setup() {
  $PY - "$1" <<'EOF'
import re, sys
p = sys.argv[1] + "/setup.py"
s = open(p).read()
s = s.replace("-std=c++17", "-std=c++20")
s = s.replace("+ cc_flag", '+ ["-gencode", "arch=compute_90,code=sm_90"]')
s = s.replace("from wheel.bdist_wheel import bdist_wheel as _bdist_wheel",
              "try:\n    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel\n"
              "except ImportError:\n"
              "    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel")
open(p, "w").write(s)
EOF
}
build() {  # name dir
  (cd "$2" && patch_setup "$2" && MAX_JOBS=${MAX_JOBS:-16} nice -n 10 \
    timeout "$BUILD_LIMIT" $PY setup.py build_ext --inplace) >"$OUT/build_$1.log" 2>&1
  echo $? >"$OUT/build_$1.rc"
}
(
  build causal_conv1d "$CSRC" &
  build mamba_ssm "$MSRC" &
  wait
) &
BUILD_PID=$!
log "build started (pid $BUILD_PID, limit ${BUILD_LIMIT}s)"

# 3. parity against mamba_ssm's Python (stub kernels), protocol version and the built version
for v in 2.2.2 2.2.6.post3; do
  timeout $(($(left) > 120 ? 120 : $(left))) $PY bench/gpu_mamba.py parity \
    --src "$WORK/src/mamba_ssm-$v" --out "$OUT/parity_$v.json" >"$OUT/parity_$v.log" 2>&1
  log "parity $v rc=$? $(grep -c 'worst rel' "$OUT/parity_$v.log") cases; $(grep 'worst rel' "$OUT/parity_$v.log" | awk '{print $NF}' | tr '\n' ' ')"
done

# 4. our block on the GPU (the build shares the CPU at low priority while this runs)
timeout $(($(left) > 150 ? 150 : $(left))) $PY bench/gpu_mamba.py time ${SHAPES:+--shapes $SHAPES} \
  --out "$OUT/time_torch.json" >"$OUT/time_torch.log" 2>&1
log "timing ours rc=$?"

# 5. wait for the build, then the real kernels
while kill -0 $BUILD_PID 2>/dev/null && [ "$(left)" -gt 100 ]; do sleep 5; done
if kill -0 $BUILD_PID 2>/dev/null; then
  log "build still running with $(left)s left: going on without it (its timeout stops it)"
fi
log "build rc: causal_conv1d=$(cat "$OUT/build_causal_conv1d.rc" 2>/dev/null) mamba_ssm=$(cat "$OUT/build_mamba_ssm.rc" 2>/dev/null)"
ls "$MSRC"/*.so "$CSRC"/*.so >"$OUT/built_so.txt" 2>&1
if ls "$MSRC"/selective_scan_cuda*.so >/dev/null 2>&1; then
  # sitecustomize: register the in-place build for every python started below (pytest too)
  mkdir -p "$WORK/shim"
  cat >"$WORK/shim/sitecustomize.py" <<EOF
import sys
sys.path.insert(0, "$PWD/bench")
import mamba_ssm_shim
mamba_ssm_shim.install("$MSRC", stub_kernels=False, conv_src="$CSRC")
EOF
  PYTHONPATH="$WORK/shim:$PYTHONPATH" timeout $(($(left) > 150 ? 150 : $(left) - 5)) \
    $PY -m pytest -q tests/gpu -m gpu -rA -p no:cacheprovider >"$OUT/pytest_gpu.log" 2>&1
  log "pytest tests/gpu rc=$? : $(tail -1 "$OUT/pytest_gpu.log")"
  PYTHONPATH="$WORK/shim:$PYTHONPATH" timeout $(($(left) > 5 ? $(left) - 3 : 1)) \
    $PY bench/gpu_mamba.py fused ${SHAPES:+--shapes $SHAPES} --src "$MSRC" --conv-src "$CSRC" \
    --out "$OUT/time_fused.json" >"$OUT/time_fused.log" 2>&1
  log "timing fused rc=$?"
else
  log "no selective_scan_cuda built: see build_mamba_ssm.log (tail below)"
  tail -25 "$OUT/build_mamba_ssm.log" | tee -a "$OUT/steps.log"
fi

$PY - "$OUT" <<'EOF' || true
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
summary = {}
for f in sorted(out.glob("*.json")):
    if f.name == "summary.json":
        continue
    d = json.loads(f.read_text())
    if f.name.startswith("parity"):
        summary[f.stem] = {k: round(v["worst_rel"], 9) for k, v in d["cases"].items()}
        summary[f.stem]["ok"] = d["ok"]
    else:
        t = d.get("timing", d)
        summary[f.stem] = {k: {"ms": v.get("mamba", {}).get("median_ms"),
                               "attn_ms": v.get("attention", {}).get("median_ms"),
                               "ratio": v.get("ratio"), "ran": v.get("ran"),
                               "peak_mib": v.get("mamba", {}).get("peak_mem_mib"),
                               "error": v.get("error")}
                           for k, v in t.get("shapes", {}).items()}
        if "reason" in d:
            summary[f.stem]["reason"] = d["reason"]
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
EOF
log "done"
