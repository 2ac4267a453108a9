#!/usr/bin/env bash
# Set up the generation hosts that can run here, then run tests/export with them: test_export_hosts.py loads reneg's
# exported files through each host's own code, and the ComfyUI tests of test_export_roundtrip.py and
# test_export_safety.py run instead of skipping.
#
#   scripts/host_checks.sh [PYTEST ARGS]   # everything it can set up; a host it cannot is skipped, with the reason
#
# What it sets up, in RENEG_HOSTS_DIR (default /tmp/reneg-hosts), never in the repository or the system Python:
#   ComfyUI   a checkout: RENEG_COMFYUI if set, else the HEAD tree of the git directory RENEG_COMFYUI_GIT (a bare
#             snapshot; blobs it lacks, such as a large tokenizer.json, are left out), else a shallow clone of
#             RENEG_COMFYUI_URL (default: ComfyUI's public repository)
#   Forge     the same with RENEG_FORGE / RENEG_FORGE_GIT / RENEG_FORGE_URL (stable-diffusion-webui-forge)
#   venv-hosts     this Python's packages plus what ComfyUI's comfy/ and Forge's backend/ import beyond reneg's
#                  dependencies (einops, torchsde, av; gguf, lark), installed without dependencies
#   venv-invokeai  this Python's packages plus invokeai 6.14.2 and diffusers 0.39.0 (the version InvokeAI pins;
#                  0.42 lacks a module it imports) and the light packages InvokeAI imports, without dependencies
# torch, transformers and numpy stay the system's in both (checked below).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HOSTS="${RENEG_HOSTS_DIR:-/tmp/reneg-hosts}"
PYTHON="${PYTHON:-python}"
mkdir -p "$HOSTS"
log() { echo "host_checks: $*"; }

checkout() {  # checkout NAME GITDIR URL -> prints the folder, or nothing
  local name=$1 gitdir=$2 url=$3 dest="$HOSTS/$1"
  if [ -d "$dest" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then echo "$dest"; return; fi
  if [ -n "$gitdir" ] && git --git-dir="$gitdir" rev-parse HEAD >/dev/null 2>&1; then
    mkdir -p "$dest"
    git --git-dir="$gitdir" ls-tree -r -z HEAD | while IFS= read -r -d '' line; do
      local meta=${line%%$'\t'*} path=${line#*$'\t'}
      set -- $meta
      [ "$2" = blob ] || continue
      mkdir -p "$dest/$(dirname "$path")"
      git --git-dir="$gitdir" cat-file blob "$3" >"$dest/$path" 2>/dev/null || { rm -f "$dest/$path"; log "$name: snapshot lacks $path" >&2; }
    done
    git --git-dir="$gitdir" rev-parse HEAD >"$dest/.reneg-commit"
    echo "$dest"; return
  fi
  if [ -n "$url" ] && git clone -q --depth 1 "$url" "$dest" >/dev/null 2>&1; then
    git -C "$dest" rev-parse HEAD >"$dest/.reneg-commit"; echo "$dest"; return
  fi
  rm -rf "$dest"
}

venv() {  # venv NAME PACKAGES... -> prints the venv's python, or nothing
  local dir="$HOSTS/$1"; shift
  if [ ! -x "$dir/bin/python" ]; then
    "$PYTHON" -m venv --system-site-packages "$dir" || return
  fi
  "$dir/bin/pip" install -q --no-deps "$@" >"$dir.pip.log" 2>&1 || { log "$(basename "$dir"): pip failed (see $dir.pip.log)" >&2; return; }
  echo "$dir/bin/python"
}

COMFYUI="${RENEG_COMFYUI:-$(checkout comfyui "${RENEG_COMFYUI_GIT:-}" "${RENEG_COMFYUI_URL:-https://github.com/Comfy-Org/ComfyUI}")}"
FORGE="${RENEG_FORGE:-$(checkout forge "${RENEG_FORGE_GIT:-}" "${RENEG_FORGE_URL:-https://github.com/lllyasviel/stable-diffusion-webui-forge}")}"
HOSTS_PY="$(venv venv-hosts einops==0.8.2 torchsde==0.2.6 trampoline==0.1.2 av==18.1.0 gguf==0.19.0 lark==1.3.1)"
INVOKE_PY="$(venv venv-invokeai invokeai==6.14.2 diffusers==0.39.0 semver==3.0.4 blake3==1.0.11 \
  opencv-contrib-python-headless==5.1.0.95 onnxruntime==1.32.0 onnx==1.23.2 protobuf==7.36.2 ml_dtypes==0.7.0 \
  einops==0.8.2 Deprecated==1.3.1 gguf==0.19.0 picklescan==1.0.5 spandrel==0.4.2 compel==2.5.1 torchsde==0.2.6 \
  trampoline==0.1.2)"

system="$("$PYTHON" -c 'import torch, transformers, numpy; print(torch.__version__, transformers.__version__, numpy.__version__)')"
for py in $HOSTS_PY $INVOKE_PY; do
  mine="$("$py" -c 'import torch, transformers, numpy; print(torch.__version__, transformers.__version__, numpy.__version__)')"
  [ "$mine" = "$system" ] || { log "$py has torch/transformers/numpy $mine, not the system's $system" >&2; exit 1; }
done

log "ComfyUI:  ${COMFYUI:-absent} ($(cat "$COMFYUI/.reneg-commit" 2>/dev/null || echo '?'))"
log "Forge:    ${FORGE:-absent} ($(cat "$FORGE/.reneg-commit" 2>/dev/null || echo '?'))"
log "InvokeAI: ${INVOKE_PY:-absent} ($("${INVOKE_PY:-false}" -c 'import invokeai.version as v; print(v.__version__)' 2>/dev/null || echo '?'))"

cd "$ROOT"
export RENEG_COMFYUI="${COMFYUI:-}" RENEG_COMFYUI_PYTHON="${HOSTS_PY:-}" RENEG_FORGE="${FORGE:-}" \
  RENEG_FORGE_PYTHON="${HOSTS_PY:-}" RENEG_INVOKEAI_PYTHON="${INVOKE_PY:-}"
PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 \
  "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/export "$@"
