#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input with libFuzzer (clang, AddressSanitizer + UndefinedBehaviorSanitizer):
#
#   ci/fuzz.sh [SECONDS_PER_TARGET]          # default 60
#
# Builds fuzz/*_fuzzer.cpp into build-fuzz/ (-DM2H_FUZZ=ON), generates seed corpora with fuzz/make_seeds.py
# (real torch.save archives, pickles, DCP .metadata, safetensors), and runs every target for the given time on
# its seeds, its saved regression inputs (tests/fuzz_regressions/<target>/) and the corpus it grew on earlier
# runs (build-fuzz/corpus/<target>/). Exits non-zero if any target crashed, leaked, timed out (-timeout=10) or
# went over -rss_limit_mb=2048; the input is in build-fuzz/artifacts/<target>/ and belongs, once fixed, in
# tests/fuzz_regressions/<target>/ (the unit tests replay that folder).
#
# Environment: FUZZ_TARGETS (space-separated subset), FUZZ_PARALLEL (targets run at once, default 1),
# FUZZ_BUILD_DIR (default build-fuzz), FUZZ_SKIP_SEEDS=1 (reuse the seeds of an earlier run), FUZZ_TIMEOUT
# (seconds one input may take, default 10; it is wall-clock time, so raise it on a machine shared with builds).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
build=${FUZZ_BUILD_DIR:-build-fuzz}
parallel=${FUZZ_PARALLEL:-1}
timeout=${FUZZ_TIMEOUT:-10}
read -r -a targets <<<"${FUZZ_TARGETS:-zip_archive pickle torch_archive dcp_metadata safetensors_header}"

declare -A max_len=([zip_archive]=65536 [pickle]=65536 [torch_archive]=131072 [dcp_metadata]=65536
                    [safetensors_header]=32768)
declare -A dicts=([zip_archive]="zip" [pickle]="pickle" [torch_archive]="zip pickle" [dcp_metadata]="pickle dcp"
                  [safetensors_header]="safetensors")

say() { echo "ci/fuzz.sh: $*" >&2; }

# --- toolchain: the project's packages plus clang and its libFuzzer runtime ---------------------------------------
ci/install-deps.sh
if ! command -v clang++ >/dev/null || ! compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null; then
  say "installing clang and libFuzzer"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends clang libclang-rt-dev >/dev/null
fi

# --- build -------------------------------------------------------------------------------------------------------
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DM2H_FUZZ=ON >/dev/null
cmake --build "$build" --target fuzzers -j "$(nproc)"

# --- seeds and dictionaries --------------------------------------------------------------------------------------
if [ "${FUZZ_SKIP_SEEDS:-0}" != 1 ] || [ ! -d "$build/seeds" ]; then
  rm -rf "$build/seeds"
  /usr/bin/python3 fuzz/make_seeds.py "$build/seeds"
fi
mkdir -p "$build/dicts"
for t in "${targets[@]}"; do
  [ -n "${max_len[$t]:-}" ] || { say "unknown target '$t'"; exit 2; }
  : >"$build/dicts/$t.dict"
  for d in ${dicts[$t]}; do cat "fuzz/$d.dict" >>"$build/dicts/$t.dict"; done
done

# --- run ---------------------------------------------------------------------------------------------------------
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fuzz_one() { # fuzz_one TARGET: runs it, leaves its log in $build/logs/TARGET.log, returns libFuzzer's status
  local t=$1 corpus=$build/corpus/$1 artifacts=$build/artifacts/$1/ extra=()
  mkdir -p "$corpus" "$artifacts" "$build/logs"
  [ -d "tests/fuzz_regressions/$t" ] && extra+=("tests/fuzz_regressions/$t")
  "$build/bin/${t}_fuzzer" -max_total_time="$secs" -max_len="${max_len[$t]}" -rss_limit_mb=2048 -timeout="$timeout" \
    -dict="$build/dicts/$t.dict" -artifact_prefix="$artifacts" -print_final_stats=1 \
    "$corpus" "$build/seeds/$t" "${extra[@]}" >"$build/logs/$t.log" 2>&1
}

say "fuzzing ${targets[*]} for ${secs}s each, $parallel at a time (logs in $build/logs/)"
declare -A pid_of=()
failed=()
finish() { # finish TARGET PID
  local t=$1 rc=0
  wait "$2" || rc=$?
  local stats
  stats=$(grep -E "^(#[0-9]+|stat::number_of_executed_units)" "$build/logs/$t.log" | tail -n 1 || true)
  if [ "$rc" -eq 0 ]; then
    say "$t: ok ($stats)"
  else
    say "$t: FAILED (libFuzzer exit $rc); the end of $build/logs/$t.log:"
    grep -E "ERROR|SUMMARY|Test unit written|runtime error|fuzz invariant|deadly signal|==[0-9]+==" \
      "$build/logs/$t.log" | head -n 20 >&2 || true
    tail -n 30 "$build/logs/$t.log" >&2
    failed+=("$t")
  fi
}
for t in "${targets[@]}"; do
  while [ "${#pid_of[@]}" -ge "$parallel" ]; do
    for r in "${!pid_of[@]}"; do
      if ! kill -0 "${pid_of[$r]}" 2>/dev/null; then finish "$r" "${pid_of[$r]}"; unset "pid_of[$r]"; fi
    done
    [ "${#pid_of[@]}" -ge "$parallel" ] && sleep 1
  done
  fuzz_one "$t" &
  pid_of[$t]=$!
done
for r in "${!pid_of[@]}"; do finish "$r" "${pid_of[$r]}"; done

if [ ${#failed[@]} -gt 0 ]; then
  say "crashes in: ${failed[*]} (inputs under $build/artifacts/; keep each as tests/fuzz_regressions/<target>/<name> once fixed)"
  exit 1
fi
say "no crashes"
