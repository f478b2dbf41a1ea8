#!/usr/bin/env bash
# verl version matrix: one virtual environment per older supported verl, tests/matrix in each, a summary table.
#
#   .ci/verl_matrix.sh [--rebuild] [--overlap] [--main] [VERSION...]     (default versions: 0.7.1 0.8.0 0.9.0)
#
# verl 0.9.1 is the main venv's (.ci/run builds it; python -m pytest -q collects tests/matrix there); --main also
# runs tests/matrix in .venv and adds its row. Each venv is .ci-matrix/venv-<version>, built with
#   pip install -c constraints torch==2.13.0 -e '.[math,verlXY]' 'verl==X.Y.Z' pytest hypothesis [megatron-core]
# (the verlXY extra carries the series' pins) and kept for the next run while pyproject.toml, the constraints
# and the interpreter stay the same; --rebuild builds every venv afresh. --overlap builds the next venv while
# the previous version's tests run: on 2 shared cores each overlapped build + test pair took as long as or longer
# than the two one after the other, so serial is the default. Exit status 1 if a build or a test run failed. Environment: VERL_MATRIX_DIR (default .ci-matrix), PYTHON (default python3),
# VERL_MATRIX_BUILD_TIMEOUT / VERL_MATRIX_TEST_TIMEOUT (seconds, default 1800 / 2400).
set -uo pipefail
cd "$(dirname "$0")/.."

REBUILD=0 OVERLAP=0 MAIN=0 VERSIONS=()
for arg in "$@"; do
    case "$arg" in
        --rebuild) REBUILD=1 ;;
        --overlap) OVERLAP=1 ;;
        --main) MAIN=1 ;;
        -h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "verl_matrix.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) VERSIONS+=("$arg") ;;
    esac
done
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(0.7.1 0.8.0 0.9.0)

ROOT=${VERL_MATRIX_DIR:-.ci-matrix}
PYTHON=${PYTHON:-python3}
BUILD_TIMEOUT=${VERL_MATRIX_BUILD_TIMEOUT:-1800}
TEST_TIMEOUT=${VERL_MATRIX_TEST_TIMEOUT:-2400}
mkdir -p "$ROOT" || exit 1
ROOT=$(cd "$ROOT" && pwd)
echo '*' >"$ROOT/.gitignore"  # the folder ignores itself (venvs, logs)
CONSTRAINTS=$ROOT/constraints.txt
echo 'torch==2.13.0' >"$CONSTRAINTS"  # every pip call: the CPU torch on disk, never a CUDA build

extra_of() {  # the pyproject extra of a verl series
    case "$1" in
        0.7.*) echo verl07 ;;
        0.8.*) echo verl08 ;;
        0.9.*) echo verl09 ;;
        *) return 1 ;;
    esac
}
megatron_of() {  # tests/matrix/test_megatron_paths.py's megatron-core (without it those tests skip = FAIL here)
    case "$1" in  # 0.16.1, the newest for Python 3.11: verl 0.7.1's legacy MegatronPPOActor and the 0.8/0.9
        0.7.* | 0.8.* | 0.9.*) echo megatron-core==0.16.1 ;;  # engine import and run with it (CPU shims in the tests)
        *) ;;
    esac
}
for ver in "${VERSIONS[@]}"; do
    extra_of "$ver" >/dev/null || { echo "verl_matrix.sh: no extra for verl $ver (supported: 0.7.x, 0.8.x, 0.9.x)" >&2; exit 2; }
done

now() { date +%s; }
load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'; }
show_tail() {  # file, lines, label
    echo "---- last $2 lines of $1 ($3) ----"
    tail -n "$2" "$1" 2>/dev/null | sed 's/^/    /'
    echo "----"
}
stamp_of() {  # what a venv was built from
    {
        echo "verl==$1 extra=$(extra_of "$1") $(megatron_of "$1")"
        "$PYTHON" --version 2>&1
        sha256sum pyproject.toml "$CONSTRAINTS" | cut -d' ' -f1
    } | sha256sum | cut -d' ' -f1
}

declare -A BUILD_S BUILD_HOW BUILD_OK TEST_S TEST_COUNTS RESULT

# Build (or reuse) .ci-matrix/venv-VER; records BUILD_* in a small file (also works from a background job).
build() {
    local ver=$1 extra venv log stamp start rc
    extra=$(extra_of "$ver")
    venv=$ROOT/venv-$ver log=$ROOT/build-$ver.log stamp=$(stamp_of "$ver") start=$(now)
    if [ "$REBUILD" = 0 ] && [ -f "$venv/.matrix-stamp" ] && [ "$(cat "$venv/.matrix-stamp")" = "$stamp" ]; then
        echo "reused 0 0" >"$ROOT/build-$ver.result"
        return 0
    fi
    rm -rf "$venv"
    (
        echo "# $(date -u +%FT%TZ) verl $ver, extra $extra, load $(load)"
        set -x
        "$PYTHON" -m venv "$venv" &&
            timeout --kill-after=30 "$BUILD_TIMEOUT" "$venv/bin/pip" install --no-input -c "$CONSTRAINTS" \
                torch==2.13.0 -e ".[math,$extra]" "verl==$ver" pytest hypothesis $(megatron_of "$ver")
        rc=$?
        set +x
        if [ "$rc" = 0 ]; then  # the stack the tests import must import (e.g. NumPy 1 with a too-new pyarrow fails here)
            "$venv/bin/python" -c "
import importlib.metadata as m
import verl.trainer.ppo.ray_trainer, verl.workers.utils.losses, verl_lambda.verl.register
got = m.version('verl')
assert got == '$ver', f'verl {got} installed, wanted $ver'
print('import check: verl', got, '| numpy', m.version('numpy'), '| pyarrow', m.version('pyarrow'), '| torch', m.version('torch'))
"
            rc=$?
            "$venv/bin/pip" check || echo "(pip check reports the conflicts above; not fatal)"
        fi
        echo "# exit $rc after $(($(now) - start)) s, load $(load)"
        exit "$rc"
    ) >"$log" 2>&1
    rc=$?
    if [ "$rc" = 0 ]; then
        echo "$stamp" >"$venv/.matrix-stamp"
        echo "built $(($(now) - start)) 0" >"$ROOT/build-$ver.result"
    else
        echo "FAILED $(($(now) - start)) $rc" >"$ROOT/build-$ver.result"
    fi
    return "$rc"
}

read_build() {  # fills BUILD_* for VER from its result file
    local ver=$1 how secs rc
    read -r how secs rc <"$ROOT/build-$ver.result" || { how=FAILED secs=0 rc=1; }
    BUILD_HOW[$ver]=$how BUILD_S[$ver]=$secs
    if [ "$how" = FAILED ]; then
        BUILD_OK[$ver]=0
        echo "== verl $ver: BUILD FAILED (exit $rc after $secs s); log $ROOT/build-$ver.log"
        show_tail "$ROOT/build-$ver.log" 40 "build of verl $ver"
    else
        BUILD_OK[$ver]=1
        echo "== verl $ver: venv $how${secs:+ in $secs s} ($ROOT/venv-$ver)"
    fi
}

# Run tests/matrix with PY; label, python, log name.
run_tests() {
    local label=$1 py=$2 name=$3 log junit start rc counts
    log=$ROOT/test-$name.log junit=$ROOT/junit-$name.xml start=$(now)
    rm -f "$junit"
    echo "== verl $label: python -m pytest -q tests/matrix (load $(load))"
    env -u PYTHONPATH -u VERL_USE_EXTERNAL_MODULES -u VERL_USE_EXTERNAL_PLUGINS -u VERL_LAMBDA_DRY_RUN -u RAY_ADDRESS \
        timeout --kill-after=30 "$TEST_TIMEOUT" "$py" -m pytest -q -p no:cacheprovider tests/matrix \
        --junitxml="$junit" >"$log" 2>&1
    rc=$?
    TEST_S[$label]=$(($(now) - start))
    counts=$("$py" - "$junit" <<'EOF' 2>/dev/null
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
n, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
print(f"{n - f - e - s} passed, {f} failed, {e} errors, {s} skipped")
EOF
)
    [ -n "$counts" ] || counts="no junit report"
    TEST_COUNTS[$label]=$counts
    if [ "$rc" = 0 ] && [[ "$counts" == *" 0 failed, 0 errors, 0 skipped" ]]; then
        RESULT[$label]=PASS
        grep '^verl matrix:' "$log" | sed 's/^/    /'
    else
        RESULT[$label]=FAIL
        [ "$rc" = 124 ] || [ "$rc" = 137 ] && counts+=", killed after $TEST_TIMEOUT s"
        [ "$rc" = 0 ] && counts+=" (a skipped test counts as a failure here: the matrix asserts absences instead)"
        TEST_COUNTS[$label]=$counts
        echo "== verl $label: tests FAILED (exit $rc): $counts; log $log"
        show_tail "$log" 60 "tests with verl $label"
    fi
    echo "== verl $label: $counts in ${TEST_S[$label]} s"
}

START=$(now)
START_LOAD=$(load)
echo "verl matrix: versions ${VERSIONS[*]}$([ "$MAIN" = 1 ] && echo ' + main venv'); $(nproc) cores, load $START_LOAD;" \
    "mode $([ "$OVERLAP" = 1 ] && echo overlap || echo serial)$([ "$REBUILD" = 1 ] && echo ', rebuild')"

if [ "$OVERLAP" = 1 ]; then
    build "${VERSIONS[0]}"
    read_build "${VERSIONS[0]}"
    for i in "${!VERSIONS[@]}"; do
        ver=${VERSIONS[$i]} next=${VERSIONS[$((i + 1))]:-} pid=""
        if [ -n "$next" ]; then
            build "$next" &
            pid=$!
        fi
        if [ "${BUILD_OK[$ver]}" = 1 ]; then
            run_tests "$ver" "$ROOT/venv-$ver/bin/python" "$ver"
        fi
        if [ -n "$pid" ]; then
            wait "$pid"
            read_build "$next"
        fi
    done
else
    for ver in "${VERSIONS[@]}"; do
        build "$ver"
        read_build "$ver"
        [ "${BUILD_OK[$ver]}" = 1 ] && run_tests "$ver" "$ROOT/venv-$ver/bin/python" "$ver"
    done
fi
MAIN_VER=""
if [ "$MAIN" = 1 ]; then
    if [ -x .venv/bin/python ]; then
        MAIN_VER=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("verl"))' 2>/dev/null || echo '?')
        run_tests "$MAIN_VER (main venv)" .venv/bin/python main
    else
        MAIN_VER="(none)"
        RESULT["main venv"]=FAIL TEST_COUNTS["main venv"]="no .venv: run .ci/run first" TEST_S["main venv"]=0
    fi
fi

TOTAL=$(($(now) - START))
failed=0
echo
echo "verl version matrix (tests/matrix), $(nproc) cores, load at start $START_LOAD, at end $(load)"
printf '%-20s %-8s %-16s %-48s %-9s %s\n' verl extra build tests "test time" result
for ver in "${VERSIONS[@]}"; do
    if [ "${BUILD_OK[$ver]:-0}" != 1 ]; then
        printf '%-20s %-8s %-16s %-48s %-9s %s\n' "$ver" "$(extra_of "$ver")" "FAILED ${BUILD_S[$ver]:-?} s" \
            "not run (log $ROOT/build-$ver.log)" - FAIL
        failed=1
        continue
    fi
    how=${BUILD_HOW[$ver]}
    [ "$how" = built ] && how="built ${BUILD_S[$ver]} s"
    printf '%-20s %-8s %-16s %-48s %-9s %s\n' "$ver" "$(extra_of "$ver")" "$how" "${TEST_COUNTS[$ver]}" \
        "${TEST_S[$ver]} s" "${RESULT[$ver]}"
    [ "${RESULT[$ver]}" = PASS ] || failed=1
done
if [ "$MAIN" = 1 ]; then
    label="$MAIN_VER (main venv)"
    [ -x .venv/bin/python ] || label="main venv"
    printf '%-20s %-8s %-16s %-48s %-9s %s\n' "$label" - ".ci/run" "${TEST_COUNTS[$label]}" "${TEST_S[$label]} s" \
        "${RESULT[$label]}"
    [ "${RESULT[$label]}" = PASS ] || failed=1
else
    printf '%-20s %-8s %-16s %-48s %-9s %s\n' "0.9.1 (main venv)" - ".ci/run" \
        "not run here: .ci/run's suite collects tests/matrix" - -
fi
echo "total $TOTAL s ($((TOTAL / 60)) min $((TOTAL % 60)) s); logs in $ROOT"
[ "$failed" = 0 ] && echo "verl matrix: PASS" || echo "verl matrix: FAIL"
exit "$failed"
