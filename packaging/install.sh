#!/usr/bin/env bash
# Inspector offline installer. Run from the unpacked bundle; needs no network.
#
#   ./install.sh [--prefix DIR] [--home DIR] [--python PYTHON] [--no-desktop] [--skip-selfcheck] [--require-gui]
#
#   --prefix   where the application environment goes   (default ~/.local/share/inspector/app)
#   --home     Inspector's data folder: models, records, profiles (default ~/.local/share/inspector)
#   --python   Python 3.11 or 3.12 to build the environment with (default: python3.11, python3.12, python3)
#
# Re-running upgrades in place: the environment is refreshed from this bundle; settings, profiles you
# edited and records are kept. Every file is checked against MANIFEST.json before anything is touched.
set -euo pipefail

BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${INSPECTOR_PREFIX:-$HOME/.local/share/inspector/app}
HOME_DIR=${INSPECTOR_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/inspector}
PY=""
DESKTOP=1
SELFCHECK=1
REQUIRE_GUI=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --home) HOME_DIR=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --no-desktop) DESKTOP=0; shift ;;
    --skip-selfcheck) SELFCHECK=0; shift ;;
    --require-gui) REQUIRE_GUI=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[install] %s\n' "$*"; }
fail() { printf '[install] FAILED: %s\n' "$*" >&2; exit 1; }
declare -a RESULTS=()
record() { RESULTS+=("$1|$2"); }

# ---------------------------------------------------------------- 1. Python
if [[ -z $PY ]]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY=$(command -v "$cand"); break; fi
  done
fi
[[ -n $PY ]] || fail "no Python found; install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv)"
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
BUNDLE_PY=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["python"])' "$BUNDLE/MANIFEST.json" 2>/dev/null || echo "?")
case "$PYVER" in 3.11|3.12) ;; *) fail "Python $PYVER at $PY is not supported; use 3.11 or 3.12 (--python)";; esac
[[ $PYVER == "$BUNDLE_PY" ]] || fail "this bundle was built for Python $BUNDLE_PY but $PY is $PYVER; pass --python or use a matching bundle"
"$PY" -c 'import venv, ensurepip' 2>/dev/null || fail "$PY lacks venv/ensurepip (Debian: apt-get install python$PYVER-venv)"
say "Python $PYVER at $PY"

# ---------------------------------------------------------------- 2. bundle integrity
say "verifying bundle checksums ..."
if ! "$PY" "$BUNDLE/bundle_manifest.py" "$BUNDLE"; then
  fail "the bundle is incomplete or altered (see above); copy it again from the source medium"
fi
record "bundle checksums" PASS

# ---------------------------------------------------------------- 3. desktop libraries (Linux)
if [[ $(uname -s) == Linux ]]; then
  declare -A LIBS=(
    [libxcb-icccm4]=libxcb-icccm.so.4 [libxcb-cursor0]=libxcb-cursor.so.0 [libxcb-image0]=libxcb-image.so.0
    [libxcb-keysyms1]=libxcb-keysyms.so.1 [libxcb-randr0]=libxcb-randr.so.0
    [libxcb-render-util0]=libxcb-render-util.so.0 [libxcb-shape0]=libxcb-shape.so.0
    [libxcb-xinerama0]=libxcb-xinerama.so.0 [libxcb-xkb1]=libxcb-xkb.so.1
    [libxkbcommon-x11-0]=libxkbcommon-x11.so.0 [libegl1]=libEGL.so.1 [libgl1]=libGL.so.1
    [libfontconfig1]=libfontconfig.so.1 [libdbus-1-3]=libdbus-1.so.3
  )
  have=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true) )
  missing=()
  for pkg in "${!LIBS[@]}"; do
    grep -q "${LIBS[$pkg]}" <<<"$have" || missing+=("$pkg")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    IFS=$'\n' sorted=($(sort <<<"${missing[*]}")); unset IFS
    say "the station window needs these Debian packages (Qt xcb): ${sorted[*]}"
    say "  install them with: sudo apt-get install ${sorted[*]}"
    say "  (inspection from the command line works without them)"
    [[ $REQUIRE_GUI == 1 ]] && fail "GUI libraries missing (--require-gui)"
    record "desktop libraries" "WARN (missing ${#missing[@]})"
  else
    record "desktop libraries" PASS
  fi
fi

# ---------------------------------------------------------------- 4. environment
mkdir -p "$PREFIX" "$HOME_DIR"
if [[ -x $PREFIX/venv/bin/python ]]; then
  OLD=$("$PREFIX/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "")
  if [[ $OLD != "$PYVER" ]]; then
    say "existing environment uses Python ${OLD:-?}; rebuilding it"
    rm -rf "$PREFIX/venv"
  else
    say "upgrading the existing environment in place"
  fi
fi
[[ -x $PREFIX/venv/bin/python ]] || "$PY" -m venv "$PREFIX/venv"
VPY=$PREFIX/venv/bin/python
say "installing wheels (offline) ..."
"$VPY" -m pip install -q --no-index --find-links "$BUNDLE/wheelhouse" --upgrade pip 2>/dev/null || true
WHEEL=$(ls "$BUNDLE"/wheelhouse/inspector-*.whl | head -n 1)
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$VPY" -m pip install -q --no-index --find-links "$BUNDLE/wheelhouse" -c "$BUNDLE/constraints.txt" "$WHEEL"; then
  fail "pip could not install from the bundle's wheelhouse (see above); was the bundle built for this platform?"
fi
# the bundle's own build always replaces what is there (upgrade in place, even at the same version)
"$VPY" -m pip install -q --no-index --no-deps --force-reinstall "$WHEEL" \
  || fail "could not install $WHEEL"
INSPECTOR=$PREFIX/venv/bin/inspector
record "environment ($PREFIX/venv)" PASS

export INSPECTOR_HOME=$HOME_DIR HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# ---------------------------------------------------------------- 5. weights
MODELS=()
if [[ -d $BUNDLE/models ]]; then
  say "importing model weights into the model store ..."
  if "$INSPECTOR" models import "$BUNDLE/models"; then
    record "model weights import" PASS
  else
    record "model weights import" FAIL
  fi
  mapfile -t MODELS < <("$PY" -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1])).get("models", [])))' "$BUNDLE/MANIFEST.json")
else
  say "bundle carries no weights (the weight-free pipeline works; import weights later with 'inspector models import')"
fi

# ---------------------------------------------------------------- 6. profiles and settings
PROFILES=$HOME_DIR/profiles
mkdir -p "$PROFILES"
if [[ -d $BUNDLE/profiles ]]; then
  added=0
  for p in "$BUNDLE"/profiles/*/; do
    name=$(basename "$p")
    if [[ ! -e $PROFILES/$name ]]; then cp -r "$p" "$PROFILES/$name"; added=$((added + 1)); fi
  done
  say "profiles: $added new, existing ones kept in $PROFILES"
fi
"$VPY" - "$PROFILES" <<'EOF'
import sys
from pathlib import Path
from inspector.settings import Settings, config_path
cfg = config_path()
s = Settings.load()
if not cfg.is_file() or s.profiles_dir is None:
    s.profiles_dir = Path(sys.argv[1])
    print(f"[install] settings written to {s.save()}")
else:
    print(f"[install] keeping settings {cfg}")
EOF
record "profiles and settings" PASS

# ---------------------------------------------------------------- 7. launcher
BIN=$HOME/.local/bin
mkdir -p "$BIN"
cat > "$BIN/inspector-station" <<EOF
#!/usr/bin/env bash
export INSPECTOR_HOME="$HOME_DIR" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$INSPECTOR" gui "\$@"
EOF
ln -sf "$INSPECTOR" "$BIN/inspector"
chmod +x "$BIN/inspector-station"
if [[ $DESKTOP == 1 ]]; then
  APPS=${XDG_DATA_HOME:-$HOME/.local/share}/applications
  mkdir -p "$APPS"
  cat > "$APPS/inspector.desktop" <<EOF
[Desktop Entry]
Type=Application
Name=Inspector
Comment=Anomaly inspection station
Exec=$BIN/inspector-station
Terminal=false
Categories=Graphics;Engineering;
EOF
  record "launcher + desktop entry" PASS
else
  record "launcher" PASS
fi

# ---------------------------------------------------------------- 8. self-check
status=0
if [[ $SELFCHECK == 1 ]]; then
  for key in "${MODELS[@]}"; do
    if "$INSPECTOR" models verify "$key" >/dev/null; then record "weights $key" PASS; else record "weights $key" FAIL; status=1; fi
  done
  say "self-check: headless inspection of the demo line ..."
  if "$INSPECTOR" demo --headless; then record "demo line inspection" PASS; else record "demo line inspection" FAIL; status=1; fi
fi

echo
echo "==================== Inspector install summary ===================="
for r in "${RESULTS[@]}"; do printf '  %-40s %s\n' "${r%%|*}" "${r##*|}"; done
for r in "${RESULTS[@]}"; do [[ ${r##*|} == FAIL ]] && status=1; done
echo "  environment: $PREFIX/venv    data: $HOME_DIR"
echo "  start the station: $BIN/inspector-station   (or the 'Inspector' desktop entry)"
if [[ $status == 0 ]]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
exit $status
