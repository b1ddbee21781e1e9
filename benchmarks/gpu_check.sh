#!/usr/bin/env bash
# One-shot check of optdiff's CUDA backend on a fresh GPU machine (issue 22; docs/gpu.md).
#
#   bash benchmarks/gpu_check.sh --prepare     # HERE, before the GPU call: collect what the GPU
#                                              # machine lacks into .gpu_carry/ (git-ignored)
#   OUT=/dir bash benchmarks/gpu_check.sh      # THERE, from the repository root; results in $OUT
#   GPU_CHECK_DRY=1 OUT=/tmp/x bash benchmarks/gpu_check.sh   # every stage on the CPU (cuda-emu)
#
# Stages, in order, each under its own timeout and inside one overall budget (GPU_CHECK_BUDGET
# seconds, default 450): env (driver FIRST, toolkit choice), build, info (import _cuda directly),
# tests (tests/test_cuda.py with CUDA_LAUNCH_BLOCKING=1; skips count as failures), smoke (+
# compute-sanitizer when present), checks (two streams, memory per sample, large N, OOM),
# bench (training and DDPM steps vs PyTorch eager/compiled and JAX jit), profile (per-kernel
# times against the byte floors). Every stage appends to $OUT/summary.txt and results.json as it
# ends, so a stage killed by its timeout loses only itself. Exactly 8 files go to $OUT (the device
# tool brings back at most 8): summary.txt results.json env.log build.log tests.log tests.xml
# sanitizer.log bench.log. Exit status 0 only when every stage passed.
set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
CARRY=$REPO/.gpu_carry

if [ "${1:-}" = "--prepare" ]; then
    # FFTW3 (headers + the two shared libraries) from this machine: the top-level CMake needs it
    # for the CPU core, which the tests compare against. Nothing is downloaded.
    mkdir -p "$CARRY/fftw/include" "$CARRY/fftw/lib"
    grep -qx '/.gpu_carry/' .git/info/exclude 2>/dev/null || echo '/.gpu_carry/' >> .git/info/exclude
    inc=$(echo '#include <fftw3.h>' | cpp -H -o /dev/null 2>&1 | awk '/fftw3.h/{print $2; exit}')
    [ -n "$inc" ] || { echo "prepare: no fftw3.h here (apt-get install libfftw3-dev)"; exit 1; }
    cp "$inc" "$CARRY/fftw/include/"
    for lib in libfftw3.so.3 libfftw3f.so.3; do
        path=$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')
        [ -n "$path" ] || { echo "prepare: $lib not found"; exit 1; }
        cp -L "$path" "$CARRY/fftw/lib/$lib"
    done
    du -sh "$CARRY"
    echo "prepared: call the device tool with carry=[\".gpu_carry\"] and the command"
    echo "  OUT=\$OUT bash benchmarks/gpu_check.sh"
    exit 0
fi

DRY=${GPU_CHECK_DRY:-0}
OUT=${OUT:-$REPO/gpu_check_out}
mkdir -p "$OUT"
BUDGET=${GPU_CHECK_BUDGET:-450}
START=$(date +%s)
PY=${PYTHON:-python3}
SUMMARY=$OUT/summary.txt
RESULTS=$OUT/results.json
: > "$SUMMARY"
rm -f "$RESULTS"
FAILED=0
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }

# note STAGE RC SECONDS [TEXT]: one line in summary.txt and an entry in results.json["stages"]
note() {
    say "stage $1: rc=$2 ${3}s ${4:-}"
    "$PY" - "$RESULTS" "$1" "$2" "$3" "${4:-}" <<'EOF' || true
import json, os, sys
path, stage, rc, secs, text = sys.argv[1:6]
try:
    data = json.load(open(path))
except (OSError, ValueError):
    data = {}
data.setdefault("stages", {})[stage] = {"rc": int(rc), "seconds": int(secs), "note": text}
tmp = path + ".tmp"
json.dump(data, open(tmp, "w"), indent=1)
os.replace(tmp, path)
EOF
    [ "$2" = 0 ] || FAILED=1
}

# run STAGE CAP LOG CMD...: CMD under timeout min(CAP, budget left), output appended to LOG
run() {
    local stage=$1 cap=$2 log=$3
    shift 3
    local t
    t=$(left)
    [ "$t" -lt "$cap" ] && cap=$t
    if [ "$cap" -lt 5 ]; then
        note "$stage" 124 0 "not run: the overall budget is spent"
        return 124
    fi
    echo "==== $stage (timeout ${cap}s): $*" >> "$log"
    local t0 rc
    t0=$(date +%s)
    timeout -k 5 "$cap" "$@" >> "$log" 2>&1
    rc=$?
    local why=""
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && why="timed out after ${cap}s"
    note "$stage" "$rc" $(($(date +%s) - t0)) "$why"
    return "$rc"
}

# ---------------------------------------------------------------- env: the driver first
ENVLOG=$OUT/env.log
# The toolkit's tools may not be on PATH (CMake needs nvcc to build the CUDA module).
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do
    [ -d "$d" ] && case ":$PATH:" in *":$d:"*) ;; *) PATH=$PATH:$d ;; esac
done
export PATH
{
    echo "date: $(date -u +%FT%TZ)  dry=$DRY  budget=${BUDGET}s  host=$(hostname)"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv || true
        nvidia-smi | head -5 || true
    else
        echo "nvidia-smi: not installed"
    fi
    ls /dev/nvidia* 2>&1 | head -5
    command -v nvcc > /dev/null && nvcc --version | tail -2
    command -v compute-sanitizer > /dev/null && compute-sanitizer --version | head -2
    "$PY" --version
    "$PY" - <<'EOF'
import importlib.metadata as md
for p in ("numpy", "scipy", "torch", "jax", "jaxlib", "jax-cuda13-plugin", "cupy-cuda13x", "nvidia-cufft",
          "nvidia-cufft-cu12", "pybind11", "pytest", "cmake", "ninja"):
    try:
        print(f"{p}=={md.version(p)}")
    except md.PackageNotFoundError:
        print(f"{p}: not installed")
EOF
    ls -d /usr/local/cuda* 2>/dev/null
} > "$ENVLOG" 2>&1
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
DRIVER_MAJOR=${DRIVER%%.*}
TOOLKIT_NOTE="nvcc on PATH (CUDA 13 runtime + CUDA 13 cuFFT)"
CMAKE_CUDA_ARGS=()
if [ "$DRY" != 1 ] && [ -n "$DRIVER_MAJOR" ] && [ "$DRIVER_MAJOR" -lt 580 ] 2>/dev/null; then
    # A CUDA 13 runtime needs driver R580+: fall back to a 12.x toolkit and a cu12 cuFFT.
    # shellcheck disable=SC2086  # the glob must expand
    CU12=$(ls -d ${GPU_CHECK_CUDA12_GLOB:-/usr/local/cuda-12*} 2>/dev/null | sort -V | tail -1)
    # a CUDA 12 cuFFT wheel: nvidia/cu12 (newer layout) or nvidia/cufft (nvidia-cufft-cu12)
    CU12_FFT=$("$PY" -c "
import glob, nvidia, os
hits = [os.path.join(r, s) for r in nvidia.__path__ for s in ('cu12', 'cufft')
        if glob.glob(os.path.join(r, s, 'lib', 'libcufft.so.11*'))
        and os.path.exists(os.path.join(r, s, 'include', 'cufft.h'))]
print(hits[0] if hits else '')" 2>/dev/null)
    if [ -n "$CU12" ] && [ -x "$CU12/bin/nvcc" ]; then
        CMAKE_CUDA_ARGS=(-DCMAKE_CUDA_COMPILER="$CU12/bin/nvcc")
        [ -n "$CU12_FFT" ] && CMAKE_CUDA_ARGS+=(-DOPTDIFF_CUFFT_ROOT="$CU12_FFT")
        export CUDA_HOME=$CU12
        TOOLKIT_NOTE="driver $DRIVER < R580: CUDA 12 toolkit $CU12, cuFFT ${CU12_FFT:-of that toolkit}"
    else
        TOOLKIT_NOTE="driver $DRIVER < R580 needs a CUDA 12 toolkit, and none is installed (/usr/local/cuda-12*): the CUDA 13 build will not load"
    fi
fi
say "driver: ${DRIVER:-none}; toolkit: $TOOLKIT_NOTE"
note env 0 $(($(date +%s) - START)) "driver ${DRIVER:-none}"

# ---------------------------------------------------------------- build
BUILDLOG=$OUT/build.log
BDIR=${GPU_CHECK_BUILD_DIR:-$REPO/build/gpu}
PKG=$BDIR/pkg
if [ "$DRY" = 1 ] && [ "${GPU_CHECK_DRY_BUILD:-0}" != 1 ]; then
    # The dry run uses the in-tree build (python/optdiff's modules) when there is one, else the
    # installed package (what `./dev test` and CI have); GPU_CHECK_DRY_BUILD=1 builds
    # build/gpu-dry with the emulation module instead (minutes on 2 cores).
    if compgen -G "$REPO/python/optdiff/_core*.so" > /dev/null; then
        export PYTHONPATH=$REPO/python:$REPO
        echo "dry run: using the in-tree modules under python/optdiff" >> "$BUILDLOG"
        note build 0 0 "dry: in-tree modules"
    else
        export PYTHONPATH=$REPO
        echo "dry run: using the installed optdiff ($("$PY" -c 'import optdiff; print(optdiff.__file__)' 2>&1))" >> "$BUILDLOG"
        note build 0 0 "dry: installed package"
    fi
else
    CUDA_ARGS=(-DOPTDIFF_CUDA=ON -DOPTDIFF_CUDA_ARCHITECTURES=90)
    if [ "$DRY" = 1 ]; then
        BDIR=${GPU_CHECK_BUILD_DIR:-$REPO/build/gpu-dry}
        PKG=$BDIR/pkg
        CUDA_ARGS=(-DOPTDIFF_CUDA=OFF)
    fi
    FFTW_ARGS=()
    if ! echo '#include <fftw3.h>' | cpp > /dev/null 2>&1; then
        if [ -d "$CARRY/fftw" ]; then
            # the carried copy (see --prepare), with the unversioned names the linker wants
            F=/tmp/optdiff-fftw
            rm -rf "$F" && mkdir -p "$F" && cp -r "$CARRY/fftw/." "$F/"
            ln -sf libfftw3.so.3 "$F/lib/libfftw3.so"
            ln -sf libfftw3f.so.3 "$F/lib/libfftw3f.so"
            FFTW_ARGS=(-DCMAKE_PREFIX_PATH="$F")
            export LD_LIBRARY_PATH=$F/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
            echo "FFTW3 from the carried copy in $F" >> "$BUILDLOG"
        else
            echo "no FFTW3 here and no .gpu_carry/fftw (run --prepare before the call)" >> "$BUILDLOG"
        fi
    fi
    PYBIND=$("$PY" -m pybind11 --cmakedir 2>/dev/null)
    # The build as a script (timeout runs commands, not shell functions); no -Werror: the
    # machine's compiler may be newer than CI's, and a new warning must not cost the run.
    BUILD_SH=$(mktemp)
    {
        echo "set -e -x"
        printf '%q ' cmake -S . -B "$BDIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
            -DOPTDIFF_CUDA_EMULATION=ON -DOPTDIFF_BUILD_TESTS=OFF -DOPTDIFF_JAX=OFF \
            -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$PYBIND" \
            "${CUDA_ARGS[@]}" "${CMAKE_CUDA_ARGS[@]}" "${FFTW_ARGS[@]}"
        echo
        printf '%q ' cmake --build "$BDIR" -j"${GPU_CHECK_JOBS:-$(nproc)}"
        echo
        printf 'rm -rf %q && mkdir -p %q && cp -r python/optdiff %q/\n' "$PKG" "$PKG" "$PKG"
        printf 'rm -f %q/optdiff/*.so && cp %q/_*.so %q/optdiff/\n' "$PKG" "$BDIR" "$PKG"
        # the cuFFT record goes next to the module (the real build only)
        printf 'if [ -f %q/_cuda_cufft.txt ]; then cp %q/_cuda_cufft.txt %q/optdiff/; fi\n' "$BDIR" "$BDIR" "$PKG"
    } > "$BUILD_SH"
    run build "${GPU_CHECK_BUILD_CAP:-240}" "$BUILDLOG" bash "$BUILD_SH"
    BUILD_RC=$?
    rm -f "$BUILD_SH"
    if [ "$BUILD_RC" != 0 ]; then  # nothing after this can mean anything: stop, keep the time
        tail -30 "$BUILDLOG" | tee -a "$SUMMARY"
        for s in info tests smoke sanitizer checks bench profile; do note "$s" 125 0 "not run: the build failed"; done
        say "total $(($(date +%s) - START))s; SOME STAGE FAILED (build)"
        exit 1
    fi
    export PYTHONPATH=$PKG:$REPO
fi

# ---------------------------------------------------------------- info: import _cuda directly
BENCHLOG=$OUT/bench.log
DRYFLAG=()
[ "$DRY" = 1 ] && DRYFLAG=(--dry)
run info 60 "$BENCHLOG" "$PY" benchmarks/gpu_bench.py info --json "$RESULTS" "${DRYFLAG[@]}"
tail -40 "$BENCHLOG" >> "$ENVLOG"

# ---------------------------------------------------------------- tests (skips are failures)
TESTLOG=$OUT/tests.log
TESTS=(tests/test_cuda.py tests/test_build_deps.py)
SELECT=()
if [ "$DRY" = 1 ]; then
    TESTS=(tests/test_cuda.py)
    SELECT=(-k "import_and_device_count or gpu_present or cufft or plan_cache")
else
    export OPTDIFF_REQUIRE_CUDA=1  # backend='cuda' unusable: the tests fail, never skip
fi
export CUDA_LAUNCH_BLOCKING=1  # a kernel fault is reported at its launch, not later
# Third-party pytest plugins of that image stay out: with warnings as errors (pyproject) one
# plugin's deprecation warning would fail the run for nothing optdiff did.
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 run tests 150 "$TESTLOG" "$PY" -m pytest -q -p no:cacheprovider -rs \
    --junitxml="$OUT/tests.xml" "${SELECT[@]}" "${TESTS[@]}"
# Skips: allowed only for what cannot run here by design (CuPy/PyTorch kinds on the emulation).
"$PY" - "$OUT/tests.xml" "$DRY" "$RESULTS" <<'EOF' >> "$SUMMARY" 2>&1
import json, os, re, sys
import xml.etree.ElementTree as ET
path, dry, results = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
allowed = re.compile(r"need a real device|arrays need a real device|checks the emulation module")
try:
    root = ET.parse(path).getroot()
except (OSError, ET.ParseError) as exc:
    print(f"tests: no junit file ({exc})")
    sys.exit(0)
counts = {"passed": 0, "failed": 0, "skipped_allowed": 0, "skipped_counted_as_failures": 0}
bad = []
for case in root.iter("testcase"):
    name = case.get("classname", "") + "::" + case.get("name", "")
    if case.find("failure") is not None or case.find("error") is not None:
        counts["failed"] += 1
        bad.append(name)
    elif (sk := case.find("skipped")) is not None:
        msg = sk.get("message", "")
        if allowed.search(msg) or (dry and "[cuda-" in name or dry and "no CUDA device" in msg):
            counts["skipped_allowed"] += 1
        else:
            counts["skipped_counted_as_failures"] += 1
            bad.append(f"{name} (skipped: {msg})")
    else:
        counts["passed"] += 1
print("tests:", counts)
for b in bad[:30]:
    print("  not passed:", b)
try:
    data = json.load(open(results))
except (OSError, ValueError):
    data = {}
data["tests"] = dict(counts, not_passed=bad)
json.dump(data, open(results + ".tmp", "w"), indent=1)
os.replace(results + ".tmp", results)
sys.exit(1 if counts["failed"] or counts["skipped_counted_as_failures"] else 0)
EOF
[ $? = 0 ] || { FAILED=1; say "tests: failures or skips counted as failures (see above)"; }

# ---------------------------------------------------------------- smoke, then under the sanitizer
SANLOG=$OUT/sanitizer.log
run smoke 60 "$SANLOG" "$PY" benchmarks/gpu_bench.py smoke --json "$RESULTS" "${DRYFLAG[@]}"
if [ "$DRY" != 1 ] && command -v compute-sanitizer > /dev/null; then
    # Caching allocators would hide an overrun inside a cached block: PyTorch's off, and
    # optdiff's scratch from plain cudaMalloc instead of its stream-ordered pool.
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 OPTDIFF_CUDA_NO_POOL=1 run sanitizer 75 "$SANLOG" compute-sanitizer --tool memcheck --error-exitcode 3 --print-limit 20 \
        "$PY" benchmarks/gpu_bench.py smoke --json "$OUT/sanitizer.json"
    rm -f "$OUT/sanitizer.json" "$OUT/sanitizer.json.tmp"
else
    why="compute-sanitizer $(command -v compute-sanitizer > /dev/null && echo present || echo absent)"
    [ "$DRY" = 1 ] && why="dry run; $why"
    note sanitizer 0 0 "not run: $why"
fi

# ---------------------------------------------------------------- checks, benchmarks, profile
unset CUDA_LAUNCH_BLOCKING  # timings with asynchronous launches
run checks 60 "$BENCHLOG" "$PY" benchmarks/gpu_bench.py checks --json "$RESULTS" "${DRYFLAG[@]}"
BENCH_CAP=$(($(left) - 45))  # leave the profile its time
[ "$BENCH_CAP" -gt 300 ] && BENCH_CAP=300
run bench "$BENCH_CAP" "$BENCHLOG" "$PY" benchmarks/gpu_bench.py bench --json "$RESULTS" "${DRYFLAG[@]}"
run profile 40 "$BENCHLOG" "$PY" benchmarks/gpu_bench.py profile --json "$RESULTS" "${DRYFLAG[@]}"

# ---------------------------------------------------------------- the short table, last
"$PY" - "$RESULTS" <<'EOF' | tee -a "$SUMMARY"
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (OSError, ValueError) as exc:
    sys.exit(f"no results.json: {exc}")
info = d.get("info", {}).get("info", {})
print("device:", info.get("device"), "| runtime", info.get("runtime"), "| driver", info.get("driver"),
      "| cuFFT", info.get("cufft"))
print("| case | fused img/s | tape img/s | torch eager | torch compiled | jax jit | DDPM optdiff img/s |")
for c in d.get("bench", {}).get("cases", []):
    tr, dd = c["train"], c["ddpm"]
    f = lambda e: f"{e['images_per_s']:.0f}" if "images_per_s" in e else ("err" if "error" in e else "-")
    print(f"| {c['case']} | " + " | ".join(f(tr.get(k, {})) for k in
          ("optdiff_fused", "optdiff_tape", "torch_eager", "torch_compiled", "jax_jit"))
          + f" | {f(dd.get('optdiff', {}))} |")
for k, v in d.get("bench", {}).get("projections", {}).items():
    if k != "recipe_assumed":
        print(f"{k}: {v}")
for k, v in d.get("stages", {}).items():
    print(f"stage {k}: rc={v['rc']} {v['seconds']}s {v['note']}")
EOF
say "total $(($(date +%s) - START))s; $([ $FAILED = 0 ] && echo ALL STAGES PASSED || echo SOME STAGE FAILED)"
exit $FAILED
