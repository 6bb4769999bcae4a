#!/usr/bin/env bash
# Tessera GPU run, from the folder scripts/gpu-bundle.sh built. Needs nothing on the machine but
# bash, coreutils, tar and xz (or python3) and, for a GPU, the NVIDIA driver with its Vulkan ICD.
#   bash run.sh            GPU sizes: dense and sparse to T = 32768, decode over a 1M-token cache,
#                          linear to T = 1M, topk, the engine suite if it exists; about 8 minutes
#   bash run.sh --quick    CI-sized (a minute or two even on SwiftShader)
# Results (JSON, Markdown, SVG plots, logs, summary.md) go to $OUT (default ./gpu-results).
# Env: TESSERA_RUN_DIR (where to unpack; default <bundle>/.run), TESSERA_STEP_S (per-step limit, s).
set -uo pipefail
export PATH="${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"
case ":$PATH:" in *:/usr/bin:*) ;; *) PATH="$PATH:/usr/local/bin:/usr/bin:/bin" ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
QUICK=0
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
RUN=${TESSERA_RUN_DIR:-$HERE/.run}
SUMMARY="$OUT/summary.md"
T0=$(date +%s)
say() { echo "run.sh: $*" | tee -a "$OUT/logs/run.log" >&2; }

unxz_to() { # unxz_to SRC DST: decompress with xz, else python3's lzma
  if command -v xz >/dev/null 2>&1; then xz -dc "$1" > "$2"
  elif command -v python3 >/dev/null 2>&1; then python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$1" > "$2"
  else echo "run.sh: need xz or python3 to unpack" >&2; return 1; fi
}

# 1. Unpack node and the package (once per bundle).
if [ ! -x "$RUN/bin/node" ] || [ ! -f "$RUN/app/package.json" ] || [ "$HERE/tessera.tar.xz" -nt "$RUN/app/package.json" ]; then
  say "unpacking into $RUN"
  rm -rf "$RUN" && mkdir -p "$RUN/bin"
  unxz_to "$HERE/node.xz" "$RUN/bin/node" && chmod +x "$RUN/bin/node" || exit 1
  unxz_to "$HERE/tessera.tar.xz" "$RUN/app.tar" && tar -xf "$RUN/app.tar" -C "$RUN" && rm -f "$RUN/app.tar" || exit 1
  touch "$RUN/app/package.json"
fi
NODE="$RUN/bin/node"
CLI="$RUN/app/dist/bin/tessera.js"
say "node $("$NODE" --version)"

# 2. Vulkan: the loader (the system's, else the bundled Debian libvulkan1) and the driver's ICD.
if ! { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; } && [ ! -e /usr/lib/x86_64-linux-gnu/libvulkan.so.1 ]; then
  export LD_LIBRARY_PATH="$RUN/app/vulkan/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "Vulkan loader: bundled ($RUN/app/vulkan)"
else
  say "Vulkan loader: the system's"
fi
ICD=""
for f in ${VK_ICD_FILENAMES:-} ${VK_DRIVER_FILES:-} /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.*.json \
  /usr/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.*.json /etc/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.*.json \
  /usr/local/share/vulkan/icd.d/nvidia_icd.json /usr/local/etc/vulkan/icd.d/nvidia_icd.json; do
  if [ -f "$f" ]; then ICD=$f; break; fi
done
if [ -n "$ICD" ]; then
  say "Vulkan ICD: $ICD"
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
  export VK_ICD_FILENAMES="$ICD" VK_DRIVER_FILES="$ICD"
else
  for f in /usr/lib/chromium/vk_swiftshader_icd.json /usr/lib/chromium-browser/vk_swiftshader_icd.json /usr/lib64/chromium-browser/vk_swiftshader_icd.json; do
    if [ -f "$f" ]; then ICD=$f; break; fi
  done
  if [ -n "$ICD" ]; then
    say "no NVIDIA Vulkan ICD found: using SwiftShader ($ICD), a CPU adapter; the numbers are not a GPU's"
    export VK_ICD_FILENAMES="$ICD"
  else
    say "no NVIDIA or SwiftShader Vulkan ICD found: falling back to whatever adapter Dawn finds"
  fi
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/tessera-xdg-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
export TESSERA_ADAPTER="${TESSERA_ADAPTER:-auto}"
[ "$QUICK" = 1 ] && export TESSERA_BENCH_QUICK=1

# 3. info (also: is this a GPU?)
"$NODE" "$CLI" info | tee "$OUT/info.txt"
"$NODE" "$CLI" info --json > "$OUT/info.json" 2>/dev/null
CLASS=$("$NODE" -p "try { require('$OUT/info.json').adapterClass } catch { 'unknown' }")
say "adapter class: $CLASS"
{
  echo "# Tessera GPU run"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $([ "$QUICK" = 1 ] && echo 'quick (CI-sized)' || echo 'full') run, ICD ${ICD:-none}"
  echo
  echo '```'
  cat "$OUT/info.txt"
  echo '```'
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---:|"
} > "$SUMMARY"

# Each step runs with a time limit, logs to $OUT/logs/<step>.log and writes its suite's files
# under $OUT/<step>/<adapter>/ (TESSERA_BENCH_DIR); a failed or timed-out step does not stop the run.
FAILED=0
step() { # step NAME LIMIT_S COMMAND...
  local name=$1 limit=${TESSERA_STEP_S:-$2}; shift 2
  local t=$(date +%s)
  say "step $name (limit ${limit}s): $*"
  TESSERA_BENCH_DIR="$OUT/$name" timeout --kill-after=10 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
  local rc=$? status=ok
  [ $rc = 124 ] || [ $rc = 137 ] && status="timed out after ${limit}s"
  [ $rc != 0 ] && [ "$status" = ok ] && status="failed (exit $rc)"
  [ $rc != 0 ] && FAILED=$((FAILED + 1))
  tail -n 25 "$OUT/logs/$name.log"
  echo "| $name | $status | $(( $(date +%s) - t )) |" >> "$SUMMARY"
  say "step $name: $status"
}

HAS_ORT=0; [ -d "$RUN/app/node_modules/onnxruntime-node" ] && HAS_ORT=1
BASE=none; [ $HAS_ORT = 1 ] && BASE=ort
HAS_ENGINE=0; [ -f "$RUN/app/dist/bench/suites/engine.js" ] && HAS_ENGINE=1

# 4. verify on the golden vectors, then every suite.
if [ "$QUICK" = 1 ]; then
  # CI-sized: four small cases (one per family) instead of the whole set (minutes on a CPU adapter)
  step verify 120 "$NODE" "$CLI" verify --golden "$HERE/golden" --filter '^(linear_attn|gated_delta_rule_decode|moba_t300|attn_causal_gqa)$' --json "$OUT/verify.json"
  step dense 100 "$NODE" "$CLI" bench dense --T 128 --runs 2 --baseline "$BASE" --baseline-runs 1 --subgroups both --json "$OUT/dense.json"
  step sparse 60 "$NODE" "$CLI" bench sparse --T 1024 --dense-max-T 1024 --window 128 --moba-block 128 --methods sliding_window,moba --runs 1 --json "$OUT/sparse.json"
  step linear 60 "$NODE" "$CLI" bench linear --T 1024 --mode chunk --segment 1024 --runs 1 --warmup 0 --json "$OUT/linear.json"
  step topk 60 "$NODE" "$CLI" bench topk --cases 1x4096x64 --baseline none --runs 2 --json "$OUT/topk.json"
  step decode 60 "$NODE" "$CLI" demo needle --tokens 16384 --budget-tokens 512 --head-dim 64 --json "$OUT/decode-needle.json"
  [ $HAS_ENGINE = 1 ] && step engine 60 "$NODE" "$CLI" bench engine --json "$OUT/engine.json"
  TORCH_SHAPES="128:64:f32"
elif [ "$CLASS" = gpu ]; then
  step verify 60 "$NODE" "$CLI" verify --golden "$HERE/golden" --json "$OUT/verify.json"
  step dense 70 "$NODE" "$CLI" bench dense --T 1024,4096,16384 --D 64 --baseline "$BASE" --subgroups both --json "$OUT/dense.json"
  step dense-f16 50 "$NODE" "$CLI" bench dense --T 2048,8192,32768 --D 128 --dtype f16 --baseline none --json "$OUT/dense-f16.json"
  step sparse 60 "$NODE" "$CLI" bench sparse --T 32768 --dense-max-T 32768 --runs 3 --json "$OUT/sparse.json"
  step linear 50 "$NODE" "$CLI" bench linear --T 65536,1048576 --mode chunk --json "$OUT/linear.json"
  step topk 30 "$NODE" "$CLI" bench topk --baseline none --json "$OUT/topk.json"
  step decode 60 "$NODE" "$CLI" demo needle --tokens 1000000 --json "$OUT/decode-needle.json"
  [ $HAS_ENGINE = 1 ] && step engine 50 "$NODE" "$CLI" bench engine --json "$OUT/engine.json"
  TORCH_SHAPES="1024:64:f32,4096:64:f32,16384:64:f32,2048:128:f16,8192:128:f16,32768:128:f16"
else
  # A CPU adapter without --quick: the CPU-sized defaults of each suite, bounded.
  step verify 300 "$NODE" "$CLI" verify --golden "$HERE/golden" --json "$OUT/verify.json"
  step dense 100 "$NODE" "$CLI" bench dense --T 512,2048 --baseline "$BASE" --subgroups both --json "$OUT/dense.json"
  step sparse 80 "$NODE" "$CLI" bench sparse --T 4096 --dense-max-T 4096 --json "$OUT/sparse.json"
  step linear 60 "$NODE" "$CLI" bench linear --T 16384 --mode chunk --json "$OUT/linear.json"
  step topk 40 "$NODE" "$CLI" bench topk --cases 1x65536x2048,16384x32x3 --baseline none --json "$OUT/topk.json"
  step decode 80 "$NODE" "$CLI" demo needle --tokens 262144 --json "$OUT/decode-needle.json"
  [ $HAS_ENGINE = 1 ] && step engine 60 "$NODE" "$CLI" bench engine --json "$OUT/engine.json"
  TORCH_SHAPES="512:64:f32,2048:64:f32"
fi

# 5. The hardware's own reference: torch's scaled_dot_product_attention on the same shapes.
if command -v python3 >/dev/null 2>&1 && python3 -c 'import torch' >/dev/null 2>&1; then
  step torch-sdpa 40 python3 "$HERE/torch_sdpa.py" --shapes "$TORCH_SHAPES" --out "$OUT/torch-sdpa"
else
  say "no python3 with torch here: torch scaled_dot_product_attention not timed"
  echo "| torch-sdpa | skipped (no python3 with torch) | 0 |" >> "$SUMMARY"
fi

# 6. Collect every suite's Markdown into summary.md.
{
  echo
  for md in "$OUT"/*/*/*.md "$OUT"/torch-sdpa/*.md; do
    [ -f "$md" ] || continue
    echo "## ${md#$OUT/}"
    echo
    sed -e '1{/^# /d}' "$md"
    echo
  done
  echo "Total: $(( $(date +%s) - T0 )) s, $FAILED step(s) failed."
} >> "$SUMMARY"
say "done in $(( $(date +%s) - T0 )) s, $FAILED step(s) failed; results in $OUT (summary.md)"
[ "$FAILED" = 0 ]
