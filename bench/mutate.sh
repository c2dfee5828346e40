#!/usr/bin/env bash
# Mutation testing of one method module with mutmut, against only the tests that target it.
#
#   bench/mutate.sh inspector/detect/saa/regions.py tests/test_saa.py tests/test_saa_known.py
#
# Too slow for CI (minutes per module on 2 cores). Works in a throw-away copy of the tree under
# ${MUTATE_ROOT:-/tmp/inspector-mutate}/<dotted module>/ (e.g. detect.saa.regions), so the
# checkout is never mutated. mutmut maps each mutant to the tests that execute its function and
# runs only those, one mutant at a time (MUTATE_CHILDREN, default 1: the machine is shared).
# Prints mutmut's per-mutant results and a summary line "killed/total"; `mutmut show <name>`
# inside the copy shows one mutant's diff.
# Needs mutmut in the venv: .venv/bin/pip install mutmut  (3.8.1 used for bench/mutation.md).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
module="${1:?usage: bench/mutate.sh MODULE.py TEST_FILE...}"
shift
[ "$#" -ge 1 ] || { echo "give at least one test file for $module" >&2; exit 2; }
venv="${VENV:-$here/.venv}"
name="$(printf '%s' "${module%.py}" | sed 's#^inspector/##; s#/#.#g')"  # detect.saa.regions
work="${MUTATE_ROOT:-/tmp/inspector-mutate}/$name"
rm -rf "$work"
mkdir -p "$work"
# the tree the tests need (no .git, no venv)
for item in inspector tests resources product_profiles pyproject.toml; do
    [ -e "$here/$item" ] && cp -a "$here/$item" "$work/"
done
# mutmut reads [tool.mutmut] from pyproject.toml first: drop any, configure in setup.cfg
{
    echo "[mutmut]"
    echo "source_paths = inspector"
    echo "only_mutate = $module"
    echo "timeout_multiplier = 10.0"
    echo "also_copy ="
    echo "    tests"
    echo "    resources"
    echo "    product_profiles"
    printf 'pytest_add_cli_args =\n    -x\n    -q\n    -p\n    no:cacheprovider\n'
    echo "pytest_add_cli_args_test_selection ="
    for t in "$@"; do echo "    $t"; done
} > "$work/setup.cfg"
cd "$work"
export QT_QPA_PLATFORM=offscreen
# one intra-op thread: mutmut forks each mutant from a parent that already ran torch, and a
# forked child of a multi-threaded OpenMP pool hangs on its first matmul (mutmut then says "timeout")
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# MUTANTS: optional mutant-name patterns (fnmatch), e.g. "inspector.detect.fade.x*FadeEngine*analyse__*"
# shellcheck disable=SC2086
"$venv/bin/mutmut" run --max-children "${MUTATE_CHILDREN:-1}" ${MUTANTS:-} > mutmut-run.log 2>&1 || true
"$venv/bin/mutmut" results --all true > results.txt 2>&1 || "$venv/bin/mutmut" results > results.txt 2>&1 || true
total=$(grep -c ': ' results.txt || true)
killed=$(grep -c ': killed' results.txt || true)
echo "$module: $killed/$total killed (details: $work/results.txt)"
