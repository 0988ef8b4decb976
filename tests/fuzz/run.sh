#!/usr/bin/env bash
# Runs every fuzz target of a PARLEY_FUZZ build for a while each, on a copy
# of its seed corpus (what a run finds never lands in the repository), and
# fails if any target crashes, leaks, hangs (-timeout), runs out of memory
# (-rss_limit_mb) or finds an input that breaks one of its checks.
#
#   bash tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
#
# The crashing input of a failed target is kept in BUILD_DIR/fuzz-artifacts/
# (reproduce with: BUILD_DIR/tests/fuzz/TARGET FILE). Targets run one after
# another on one core each.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
seconds=${2:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$here"/fuzz_*.c; do
    targets+=("$(basename "$f" .c)")
  done
fi

artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/parley-fuzz-run.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=()
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/$t"
  if [ ! -x "$bin" ]; then
    echo "fuzz: $bin is missing (build with -DPARLEY_FUZZ=ON)" >&2
    failed+=("$t")
    continue
  fi
  corpus="$work/$t/corpus"
  mkdir -p "$corpus" "$work/$t/tmp"
  if [ -d "$here/corpus/$t" ]; then
    cp "$here/corpus/$t"/* "$corpus"/
  fi
  opts=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    -artifact_prefix="$artifacts/$t-")
  if [ -f "$here/$t.dict" ]; then
    opts+=(-dict="$here/$t.dict")
  fi
  log="$work/$t/log"
  printf 'fuzz: %-14s %ss ... ' "$t" "$seconds"
  # The targets' databases go to the run's own directory, gone afterwards.
  if TMPDIR="$work/$t/tmp" ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" "${opts[@]}" "$corpus" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    echo "ok (${runs:-?} runs, ${rate:-?}/s)"
  else
    echo "FAILED"
    # The report: from the first error line (a sanitizer's, libFuzzer's or a
    # target's own check) on, else the end of the log.
    first=$(grep -n -m1 -E '^==[0-9]+==|^fuzz[_a-z ]*:|runtime error|ERROR: libFuzzer' "$log" |
      cut -d: -f1 || true)
    if [ -n "$first" ]; then
      sed -n "${first},$((first + 80))p" "$log" >&2
    else
      tail -n 40 "$log" >&2
    fi
    cp "$log" "$artifacts/$t.log"
    echo "fuzz: $t failed; its log is $artifacts/$t.log, its input in $artifacts/" >&2
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
