#!/usr/bin/env bash
# The GPU device check (issue #16): install bgvid and its missing wheels, a 30-second smoke stage, the GPU
# tests with BGVID_REQUIRE_GPU=1, then the GPU benchmark. Under 3 minutes on one H200 (run it with a 240 s
# limit). Needs no network.
#
#   benchmarks/gpu_check.sh WHEELS MODELS CLIPS OUT
#     WHEELS  folder of wheels for Python 3.12 (bgvid's own, av, onnxruntime-gpu; big ones may come as
#             NAME.partNN + NAME.sha256 from shared/tools/wheel-parts: joined here)
#     MODELS  a bgvid model cache (BGVID_HOME: MODELS/models/...), with selfie, rvm and isnet (the object
#             path's test); isnet's 88 MB ONNX may come in parts like the wheels (joined here)
#     CLIPS   a folder with clips/juggle.mp4 (as ../shared/media)
#     OUT     where the log, the test report and the benchmark JSON go
#
# Prepare on a CPU machine (see README, "GPU"): python -m pip wheel --no-deps -w .whl . ; pip download the
# rest into .whl; copy the cache and the clip; split the onnxruntime-gpu wheel.
set -uo pipefail
WHEELS=${1:?usage: gpu_check.sh WHEELS MODELS CLIPS OUT}; MODELS=${2:?}; CLIPS=${3:?}; OUT=${4:?}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
started=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - started )) s)"; }

step "wheels"
for sum in "$WHEELS"/*.sha256 "$MODELS"/models/*.sha256; do  # parts -> wheel or model, checked
  [ -f "$sum" ] || continue
  name=${sum%.sha256}
  cat "$name".part[0-9][0-9] > "$name" && (cd "$(dirname "$sum")" && sha256sum -c --status "$(basename "$sum")") \
    || { echo "FAILED: $(basename "$name"): parts missing or checksum mismatch"; exit 1; }
  rm -f "$name".part[0-9][0-9] "$sum"
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/bgvid-site \
  "$WHEELS"/*.whl || { echo "FAILED: installing the wheels in $WHEELS"; exit 1; }
export PYTHONPATH=/tmp/bgvid-site${PYTHONPATH:+:$PYTHONPATH}
export BGVID_HOME=$MODELS BGVID_TEST_MEDIA=$CLIPS BGVID_TEST_NO_PULL=1

step "smoke (imports, providers, one kernel, one model call)"
timeout 60 python3 benchmarks/gpu_smoke.py || { echo "FAILED: the smoke stage (above says which piece)"; exit 1; }

step "GPU tests (BGVID_REQUIRE_GPU=1: a skip is a failure)"
BGVID_REQUIRE_GPU=1 timeout 120 python3 -m pytest -q -p no:cacheprovider -p no:randomly tests/test_gpu.py \
  --junitxml "$OUT/gpu_tests.xml"
tests=$?

step "GPU benchmark"
timeout 110 python3 benchmarks/gpu_bench.py --clips "$CLIPS" --out "$OUT/gpu_bench.json"
bench=$?

step "done: tests exit $tests, benchmark exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
