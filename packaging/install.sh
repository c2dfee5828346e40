#!/usr/bin/env bash
# Inspector offline installer. Run from the unpacked bundle; needs no network.
#
#   ./install.sh [options]            per-user install (run as the operator's user, not with sudo)
#   sudo ./install.sh --system        for every user: /opt/inspector, /usr/local/bin, a desktop entry
#
#   --system        system-wide install (needs root); data in /var/lib/inspector, settings in
#                   /etc/inspector/settings.yaml, operators need to be in the group --group (inspector)
#   --prefix DIR    application folder     (default ~/.local/share/inspector/app, system /opt/inspector)
#   --home DIR      data folder: models, records, profiles (default ~/.local/share/inspector,
#                   system /var/lib/inspector)
#   --bin-dir DIR   launchers inspector-station, inspector (default ~/.local/bin, system /usr/local/bin)
#   --apps-dir DIR  desktop entry folder    (default ~/.local/share/applications, system /usr/share/applications)
#   --icons-dir DIR icon folder             (default ~/.local/share/icons/hicolor/scalable/apps, system /usr/share/...)
#   --config FILE   settings file           (default ~/.config/inspector/settings.yaml, system /etc/inspector/...)
#   --group NAME    system mode: group that may write the data folder (default inspector; created if missing)
#   --python PY     Python 3.11 or 3.12 to build the environment with (default: python3.11, python3.12, python3)
#   --no-desktop    no desktop entry and icon
#   --no-debs       do not install the bundle's Debian packages (debs/) even when running as root
#   --no-gui        this machine only inspects from the command line: GUI problems are warnings
#   --skip-selfcheck  install only; the summary then says the self-check was skipped
#
# Re-running upgrades in place: the environment is refreshed from this bundle; settings, profiles you
# edited and records are kept. Every file is checked against MANIFEST.json before anything is touched.
# A log of every run is appended to <prefix>/install.log. Remove with <prefix>/uninstall.sh.
if [ -z "${BASH_VERSION:-}" ]; then  # started as `sh install.sh`: this script needs bash
  if command -v bash >/dev/null 2>&1; then exec bash "$0" "$@"; fi
  echo "install.sh needs bash; run it as ./install.sh or bash install.sh" >&2
  exit 2
fi
set -euo pipefail

BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HELP_LINES='2,25p'

SYSTEM=0; PREFIX=""; HOME_DIR=""; BIN_DIR=""; APPS_DIR=""; ICONS_DIR=""; CONFIG=""; GROUP=""
PY=""; DESKTOP=1; SELFCHECK=1; NO_GUI=0; DEBS=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --system) SYSTEM=1; shift ;;
    --prefix) PREFIX=$2; shift 2 ;;
    --home) HOME_DIR=$2; shift 2 ;;
    --bin-dir) BIN_DIR=$2; shift 2 ;;
    --apps-dir) APPS_DIR=$2; shift 2 ;;
    --icons-dir) ICONS_DIR=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --group) GROUP=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --no-desktop) DESKTOP=0; shift ;;
    --no-debs) DEBS=0; shift ;;
    --no-gui) NO_GUI=1; shift ;;
    --skip-selfcheck) SELFCHECK=0; shift ;;
    -h|--help) sed -n "$HELP_LINES" "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

DATA_BASE=${XDG_DATA_HOME:-$HOME/.local/share}
if [[ $SYSTEM == 1 ]]; then
  PREFIX=${PREFIX:-/opt/inspector}
  HOME_DIR=${HOME_DIR:-/var/lib/inspector}
  BIN_DIR=${BIN_DIR:-/usr/local/bin}
  APPS_DIR=${APPS_DIR:-/usr/share/applications}
  ICONS_DIR=${ICONS_DIR:-/usr/share/icons/hicolor/scalable/apps}
  CONFIG=${CONFIG:-/etc/inspector/settings.yaml}
  GROUP=${GROUP:-inspector}
else
  PREFIX=${PREFIX:-${INSPECTOR_PREFIX:-$DATA_BASE/inspector/app}}
  HOME_DIR=${HOME_DIR:-${INSPECTOR_HOME:-$DATA_BASE/inspector}}
  BIN_DIR=${BIN_DIR:-$HOME/.local/bin}
  APPS_DIR=${APPS_DIR:-$DATA_BASE/applications}
  ICONS_DIR=${ICONS_DIR:-$DATA_BASE/icons/hicolor/scalable/apps}
  CONFIG=${CONFIG:-${INSPECTOR_CONFIG:-}}
fi

say() { printf '[install] %s\n' "$*"; }
fail() { printf '[install] FAILED: %s\n' "$*" >&2; exit 1; }
declare -a RESULTS=()
record() { RESULTS+=("$1|$2"); }
STATE=$(mktemp "${TMPDIR:-/tmp}/inspector-install.XXXXXX")  # tells the log writer where PREFIX is

# the bundle's stdlib-only helper, with the site's Python, never writing bytecode into the bundle
bm() { "$PY" -B "$BUNDLE/bundle_manifest.py" "$@"; }

main() {
  set -euo pipefail
  say "$(date -u '+%Y-%m-%d %H:%M:%S UTC') installing from $BUNDLE ($([[ $SYSTEM == 1 ]] && echo system-wide || echo "for user ${USER:-$(id -un)}"))"

  # ------------------------------------------------------------ 0. who installs for whom
  if [[ $EUID == 0 && $SYSTEM == 0 ]]; then
    if [[ -n ${SUDO_USER:-} && ${SUDO_USER} != root ]]; then
      fail "started with sudo: this would install for root, not for $SUDO_USER. Run ./install.sh without sudo for $SUDO_USER, or sudo ./install.sh --system for every user"
    fi
    say "note: installing for the user root only (HOME=$HOME); use --system to install for every user"
  fi
  [[ $SYSTEM == 0 || $EUID == 0 ]] || fail "--system needs root: sudo ./install.sh --system"

  # inherited pip/Python settings must not change what is installed (PIP_USER=1, PIP_INDEX_URL, ...)
  local v
  for v in $(compgen -e); do
    case "$v" in PIP_*|PYTHONPATH|PYTHONHOME|PYTHONUSERBASE|VIRTUAL_ENV|CONDA_PREFIX) unset "$v" ;; esac
  done
  export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
  export PYTHONNOUSERSITE=1

  # ------------------------------------------------------------ 1. Python
  if [[ -z $PY ]]; then
    local cand
    for cand in python3.11 python3.12 python3; do
      if command -v "$cand" >/dev/null 2>&1; then PY=$(command -v "$cand"); break; fi
    done
  fi
  [[ -n $PY ]] || fail "no Python found; install Python 3.11 (Debian: the python3.11 and python3.11-venv packages)"
  PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || fail "cannot run $PY"
  case "$PYVER" in 3.11|3.12) ;; *) fail "Python $PYVER at $PY is not supported; use 3.11 or 3.12 (--python)";; esac
  [[ -f $BUNDLE/MANIFEST.json ]] || fail "$BUNDLE/MANIFEST.json missing: this folder is not a complete bundle; copy it again"
  BUNDLE_PY=$(bm meta "$BUNDLE" python || echo "?")
  VERSION=$(bm meta "$BUNDLE" inspector_version || echo "?")
  [[ $PYVER == "$BUNDLE_PY" ]] || fail "this bundle was built for Python $BUNDLE_PY but $PY is $PYVER; pass --python or use a matching bundle"
  "$PY" -c 'import venv, ensurepip' 2>/dev/null || fail "$PY lacks venv/ensurepip (Debian: the python$PYVER-venv package)"
  say "Inspector $VERSION, Python $PYVER at $PY"

  # ------------------------------------------------------------ 2. glibc and disk space (before anything is written)
  bm glibc "$BUNDLE" || fail "the C library is too old for this bundle (see above)"
  local upgrade=""
  [[ -x $PREFIX/venv/bin/python ]] && upgrade=--upgrade
  bm space "$BUNDLE" "$PREFIX" "$HOME_DIR" $upgrade || fail "not enough disk space (see above); nothing was installed"
  record "glibc and disk space" PASS

  # ------------------------------------------------------------ 3. bundle integrity
  say "verifying bundle checksums ..."
  bm "$BUNDLE" || fail "the bundle is incomplete or altered (see above); copy it again from the source medium"
  record "bundle checksums" PASS

  # ------------------------------------------------------------ 4. desktop libraries (Debian packages)
  if [[ $(uname -s) == Linux ]]; then desktop_libraries; fi

  # ------------------------------------------------------------ 5. environment
  mkdir -p "$PREFIX" "$HOME_DIR"
  echo "$PREFIX" > "$STATE"
  local fresh=0
  if [[ -x $PREFIX/venv/bin/python ]]; then
    local old
    old=$("$PREFIX/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "")
    if [[ $old != "$PYVER" ]]; then
      say "existing environment uses Python ${old:-?}; rebuilding it"
      rm -rf "$PREFIX/venv"
    else
      say "upgrading the existing environment in place"
    fi
  fi
  if [[ ! -x $PREFIX/venv/bin/python ]]; then "$PY" -m venv "$PREFIX/venv"; fresh=1; fi
  VPY=$PREFIX/venv/bin/python
  INSPECTOR=$PREFIX/venv/bin/inspector
  local wheel extras target
  wheel=$BUNDLE/$(bm meta "$BUNDLE" project_wheel)
  extras=$(bm meta "$BUNDLE" extras | paste -sd, -)
  [[ -f $wheel ]] || fail "the bundle's manifest names no project wheel ($wheel); rebuild the bundle"
  target=$wheel${extras:+[$extras]}
  say "installing wheels (offline)${extras:+ with extras $extras} ..."
  # the bundle's own build first, always replacing what is there (upgrade in place, even at the
  # same version); then its dependencies, where pip changes only what differs from the lock
  if ! "$VPY" -m pip install -q --no-index --no-deps --force-reinstall "$wheel" \
     || ! "$VPY" -m pip install -q --no-index --find-links "$BUNDLE/wheelhouse" -c "$BUNDLE/constraints.txt" "$target"; then
    local here
    here="$(uname -s | tr '[:upper:]' '[:lower:]')_$(uname -m), Python $PYVER"
    if [[ $fresh == 1 ]]; then rm -rf "$PREFIX/venv"; say "removed the partial environment $PREFIX/venv"; fi
    fail "pip could not install from the bundle's wheelhouse (its message above names the package). Bundle: $(bm meta "$BUNDLE" platform), Python $BUNDLE_PY; this machine: $here; free space: $(df -Ph "$PREFIX" | awk 'NR==2 {print $4}')"
  fi
  record "environment ($PREFIX/venv)" PASS

  export INSPECTOR_HOME=$HOME_DIR HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  [[ -n $CONFIG ]] && export INSPECTOR_CONFIG=$CONFIG

  # ------------------------------------------------------------ 6. weights
  MODELS=()
  if [[ -d $BUNDLE/models ]]; then
    say "importing model weights into the model store ..."
    if "$INSPECTOR" models import "$BUNDLE/models"; then record "model weights import" PASS; else record "model weights import" FAIL; fi
    mapfile -t MODELS < <(bm meta "$BUNDLE" models)
  else
    say "bundle carries no weights (the weight-free pipeline works; import weights later with 'inspector models import')"
  fi

  # ------------------------------------------------------------ 7. profiles and settings
  profiles
  settings
  record "profiles and settings" PASS

  # ------------------------------------------------------------ 8. launchers, desktop entry, uninstaller
  launchers
  [[ $SYSTEM == 1 ]] && shared_data_folder

  # ------------------------------------------------------------ 9. self-check
  local status=0
  if [[ $SELFCHECK == 1 ]]; then
    selfcheck || status=1
  fi
  local r
  for r in "${RESULTS[@]}"; do [[ ${r##*|} == FAIL* ]] && status=1; done
  echo
  echo "==================== Inspector $VERSION install summary ===================="
  for r in "${RESULTS[@]}"; do printf '  %-44s %s\n' "${r%%|*}" "${r##*|}"; done
  echo "  environment: $PREFIX/venv    data: $HOME_DIR"
  echo "  start the station: $BIN_DIR/inspector-station   (or the 'Inspector' desktop entry)"
  echo "  remove: $PREFIX/uninstall.sh    log: $PREFIX/install.log"
  if [[ $SELFCHECK == 0 ]]; then
    echo "RESULT: INSTALLED, NOT CHECKED (--skip-selfcheck; check later with: $INSPECTOR demo --headless --small)"
  elif [[ $status == 0 ]]; then
    echo "RESULT: PASS"
  else
    echo "RESULT: FAIL"
  fi
  return $status
}

# Debian packages the station window needs: check by library, install the bundle's debs as root.
desktop_libraries() {
  local have pkg so missing=() sonames=()
  have=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true) )
  while read -r pkg so; do
    [[ -z $pkg || $pkg == \#* ]] && continue
    grep -qF "$so" <<<"$have" || { missing+=("$pkg"); sonames+=("$so"); }
  done < "$BUNDLE/desktop_libs.txt"
  if [[ ${#missing[@]} == 0 ]]; then record "desktop libraries" PASS; return; fi
  say "the station window needs these Debian packages, missing here: ${missing[*]}"
  if [[ -d $BUNDLE/debs && $DEBS == 1 && $EUID == 0 ]]; then
    if install_debs "${missing[@]}"; then record "desktop libraries (installed from debs/)" PASS; return; fi
    record "desktop libraries" "FAIL (dpkg, see above)"
    return
  fi
  if [[ -d $BUNDLE/debs ]]; then
    say "  this bundle carries them: run sudo ./install.sh --system, or as root: dpkg -i $BUNDLE/debs/<the packages above>.deb"
  else
    say "  this bundle carries no Debian packages. On a connected machine with the same release run"
    say "  'apt-get download ${missing[*]}', copy the .deb files here and run 'sudo dpkg -i *.deb'"
    say "  (or rebuild the bundle with build_bundle --debs)"
  fi
  record "desktop libraries" "WARN (missing ${#missing[@]}; the GUI check below decides)"
}

# dpkg -i the smallest set of the bundle's .deb files that provides the missing packages
# (bundle_debs.py: unmet dependencies only, never a replacement of what is installed)
install_debs() {
  local out want=()
  out=$("$PY" -B "$BUNDLE/bundle_debs.py" select "$BUNDLE/debs" "$@") || return 1
  if [[ -z $out ]]; then say "every needed package is already installed"; return 0; fi
  mapfile -t want <<<"$out"
  say "installing ${#want[@]} Debian package(s) offline with dpkg: $(for d in "${want[@]}"; do basename "$d" .deb; done | tr '\n' ' ')"
  dpkg -i "${want[@]}"
}

profiles() {
  local dest=$HOME_DIR/profiles saved=$HOME_DIR/profiles-from-bundle-$VERSION added=0 same=0 differ=0 p name
  mkdir -p "$dest"
  [[ -d $BUNDLE/profiles ]] || return 0
  for p in "$BUNDLE"/profiles/*/; do
    name=$(basename "$p")
    if [[ ! -e $dest/$name ]]; then cp -r "$p" "$dest/$name"; added=$((added + 1)); continue; fi
    if diff -rq "$p" "$dest/$name" >/dev/null 2>&1; then same=$((same + 1)); continue; fi
    differ=$((differ + 1))
    rm -rf "${saved:?}/$name"; mkdir -p "$saved"; cp -r "$p" "$saved/$name"
    say "NOTICE: profile '$name' differs from the one in this bundle; yours is kept in $dest/$name,"
    say "        the bundle's version is saved in $saved/$name. Differences (yours -> bundle's):"
    diff -ru "$dest/$name" "$saved/$name" 2>&1 | head -n 40 | sed 's/^/        /' || true
  done
  say "profiles: $added new, $same unchanged, $differ differ (kept yours) in $dest"
}

settings() {
  local old_home=""
  if [[ -f $PREFIX/install-paths.sh ]]; then old_home=$(. "$PREFIX/install-paths.sh" && echo "$HOME_DIR"); fi
  "$VPY" - "$HOME_DIR" "$old_home" <<'EOF'
import shutil, sys, time
from pathlib import Path
from inspector.settings import Settings, config_path

home, old_home = Path(sys.argv[1]), (Path(sys.argv[2]) if sys.argv[2] else None)
cfg = config_path()
if not cfg.is_file():
    s = Settings.load()
    s.profiles_dir = home / "profiles"
    print(f"[install] settings written to {s.save()}")
    raise SystemExit(0)
s = Settings.load()
changed = []
if s.profiles_dir is None:
    s.profiles_dir = home / "profiles"
    changed.append(f"profiles_dir -> {s.profiles_dir}")
if old_home is not None and old_home.resolve() != home.resolve():
    for name in ("model_dir", "cache_dir", "records_path", "archive_dir", "profiles_dir"):
        value = getattr(s, name)
        if value is not None and value.resolve().is_relative_to(old_home.resolve()):
            new = home / value.resolve().relative_to(old_home.resolve())
            setattr(s, name, new)
            changed.append(f"{name}: {value} -> {new}")
if changed:
    backup = cfg.with_name(cfg.name + time.strftime(".%Y%m%d-%H%M%S.bak"))
    shutil.copy2(cfg, backup)
    s.save(cfg)
    print(f"[install] NOTICE: settings {cfg} updated for the data folder {home} (old copy: {backup}):")
    for c in changed:
        print(f"[install]   {c}")
    if old_home is not None and old_home.resolve() != home.resolve():
        print(f"[install]   records, profiles and models under {old_home} were NOT moved; move them yourself if needed")
else:
    print(f"[install] keeping settings {cfg}")
EOF
}

launchers() {
  local env_line
  env_line="export INSPECTOR_HOME=$(printf %q "$HOME_DIR") HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1"
  [[ -n $CONFIG ]] && env_line+=" INSPECTOR_CONFIG=$(printf %q "$CONFIG")"
  mkdir -p "$BIN_DIR"
  rm -f "$BIN_DIR/inspector"  # older installers made this a symlink into the environment
  printf '#!/usr/bin/env bash\n%s\nexec %q gui "$@"\n' "$env_line" "$INSPECTOR" > "$BIN_DIR/inspector-station"
  printf '#!/usr/bin/env bash\n%s\nexec %q "$@"\n' "$env_line" "$INSPECTOR" > "$BIN_DIR/inspector"
  chmod 755 "$BIN_DIR/inspector-station" "$BIN_DIR/inspector"
  local files=("$BIN_DIR/inspector-station" "$BIN_DIR/inspector")
  if [[ $DESKTOP == 1 ]]; then
    mkdir -p "$APPS_DIR" "$ICONS_DIR"
    cp "$BUNDLE/inspector.svg" "$ICONS_DIR/inspector.svg"
    "$VPY" - "$APPS_DIR/inspector.desktop" "$BIN_DIR/inspector-station" "$ICONS_DIR/inspector.svg" "$VERSION" <<'EOF'
import sys
from pathlib import Path

dest, exe, icon, version = sys.argv[1:]
# Desktop Entry spec: an argument with spaces is double-quoted, and inside the quotes " ` $ \ are
# backslash-escaped; the string-level escape then doubles every backslash. '%' is a field code.
quoted = '"' + "".join("\\\\" + c if c in '"`$\\' else c for c in exe).replace("%", "%%") + '"'
Path(dest).write_text(
    "[Desktop Entry]\nType=Application\nName=Inspector\nComment=Anomaly inspection station\n"
    f"Exec={quoted}\nIcon={icon}\nTerminal=false\nCategories=Graphics;Engineering;\n"
    f"X-Inspector-Version={version}\n",
    encoding="utf-8",
)
EOF
    chmod 644 "$APPS_DIR/inspector.desktop"
    files+=("$APPS_DIR/inspector.desktop" "$ICONS_DIR/inspector.svg")
    record "launchers + desktop entry" PASS
  else
    record "launchers" PASS
  fi
  cp "$BUNDLE/uninstall.sh" "$PREFIX/uninstall.sh"
  chmod 755 "$PREFIX/uninstall.sh"
  {
    echo "# written by install.sh $(date -u '+%Y-%m-%dT%H:%M:%SZ'); read by uninstall.sh and the next install"
    printf 'MODE=%q\nPREFIX=%q\nHOME_DIR=%q\nCONFIG=%q\nVERSION=%q\n' \
      "$([[ $SYSTEM == 1 ]] && echo system || echo user)" "$PREFIX" "$HOME_DIR" "$CONFIG" "$VERSION"
    printf 'FILES=('; printf '%q ' "${files[@]}"; printf ')\n'
  } > "$PREFIX/install-paths.sh"
}

# system mode: operators of the group may write records, the model store and profiles
shared_data_folder() {
  if ! getent group "$GROUP" >/dev/null 2>&1; then
    groupadd --system "$GROUP" && say "created group $GROUP: add operators with: usermod -aG $GROUP <user>"
  fi
  chgrp -R "$GROUP" "$HOME_DIR"
  chmod -R g+rwX "$HOME_DIR"
  find "$HOME_DIR" -type d -exec chmod g+s {} +
  if [[ -n $CONFIG ]]; then chmod 644 "$CONFIG" 2>/dev/null || true; fi
  record "data folder shared with group $GROUP" PASS
}

selfcheck() {
  local key ok=0
  for key in "${MODELS[@]}"; do
    if "$INSPECTOR" models verify "$key" >/dev/null 2>&1; then record "weights $key" PASS
    else
      record "weights $key" FAIL; ok=1
      say "weights $key failed verification: import them again from this bundle with"
      say "  $BIN_DIR/inspector models import $(printf %q "$BUNDLE/models")"
    fi
  done
  local shipped=()
  mapfile -t shipped < <(bm meta "$BUNDLE" package_models)
  for key in "${shipped[@]}"; do
    if "$INSPECTOR" models verify "$key" >/dev/null 2>&1; then record "weights $key (inside its wheel)" PASS
    else
      record "weights $key (inside its wheel)" FAIL; ok=1
      say "weights $key (shipped inside a wheel) failed verification: run this install.sh again"
    fi
  done
  local gui_fail=FAIL
  [[ $NO_GUI == 1 ]] && gui_fail="WARN (--no-gui)"
  say "self-check: PySide6 and an offscreen window ..."
  if QT_QPA_PLATFORM=offscreen "$VPY" -c '
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication(["inspector-selfcheck"])
w = QLabel("Inspector self-check"); w.show(); app.processEvents()
assert w.isVisible(), "window did not open"
w.close()
'; then record "GUI: PySide6 offscreen window" PASS
  else
    record "GUI: PySide6 offscreen window" "$gui_fail"; [[ $NO_GUI == 1 ]] || ok=1
  fi
  local plugin missing
  plugin=$("$VPY" -c 'import PySide6, pathlib; print(pathlib.Path(PySide6.__file__).parent / "Qt/plugins/platforms/libqxcb.so")' 2>/dev/null || true)
  if [[ -n $plugin && -f $plugin ]]; then
    missing=$(ldd "$plugin" 2>/dev/null | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
    if [[ -z $missing ]]; then record "GUI: X11 (xcb) platform libraries" PASS
    else
      say "the station window cannot open on X11: missing $missing(see 'desktop libraries' above)"
      record "GUI: X11 (xcb) platform libraries" "$gui_fail"; [[ $NO_GUI == 1 ]] || ok=1
    fi
  fi
  say "self-check: headless inspection of a small demo line (patchcore on the shipped weights) ..."
  if "$INSPECTOR" demo --headless --small; then record "demo line inspection" PASS; else record "demo line inspection" FAIL; ok=1; fi
  return $ok
}

# every run's output goes to the terminal and to <prefix>/install.log
LOG=$(mktemp "${TMPDIR:-/tmp}/inspector-install-log.XXXXXX")
set +e
main 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
prefix=$(cat "$STATE" 2>/dev/null || true)
if [[ -n $prefix && -d $prefix ]]; then
  cat "$LOG" >> "$prefix/install.log"
  rm -f "$LOG"
else
  echo "[install] log of this attempt: $LOG"
fi
rm -f "$STATE"
exit "$status"
