#!/usr/bin/env bash
# Remove Inspector's application environment, launchers and desktop entry. Records, profiles,
# settings and model weights are kept unless asked:
#
#   <prefix>/uninstall.sh [--purge-models] [--purge-all --yes]
#   ./uninstall.sh [--prefix DIR] [--home DIR] [--purge-models] [--purge-all --yes]   (from a bundle)
#
#   --prefix         the application folder (default: this script's folder when installed beside
#                    the app, else ~/.local/share/inspector/app); what install.sh recorded there
#                    (<prefix>/install-paths.sh) says which launchers, data folder and settings belong to it
#   --purge-models   also delete the model store (weights can be re-imported from a bundle)
#   --purge-all      also delete records, profiles and settings (needs --yes; records are QA evidence)
if [ -z "${BASH_VERSION:-}" ]; then
  if command -v bash >/dev/null 2>&1; then exec bash "$0" "$@"; fi
  echo "uninstall.sh needs bash; run it as ./uninstall.sh" >&2
  exit 2
fi
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=""; HOME_OPT=""; PURGE_MODELS=0; PURGE_ALL=0; YES=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --home) HOME_OPT=$2; shift 2 ;;
    --purge-models) PURGE_MODELS=1; shift ;;
    --purge-all) PURGE_ALL=1; shift ;;
    --yes) YES=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
# refuse before touching anything
if [[ $PURGE_ALL == 1 && $YES != 1 ]]; then
  echo "uninstall.sh: --purge-all deletes records (QA evidence), profiles and settings; add --yes to confirm. Nothing was removed." >&2
  exit 2
fi
say() { printf '[uninstall] %s\n' "$*"; }

DATA_BASE=${XDG_DATA_HOME:-$HOME/.local/share}
if [[ -z $PREFIX ]]; then
  if [[ -f $HERE/install-paths.sh ]]; then PREFIX=$HERE; else PREFIX=${INSPECTOR_PREFIX:-$DATA_BASE/inspector/app}; fi
fi
MODE=user; HOME_DIR=""; CONFIG=""; FILES=()
if [[ -f $PREFIX/install-paths.sh ]]; then
  # shellcheck disable=SC1091
  . "$PREFIX/install-paths.sh"
else
  say "no install record in $PREFIX; removing the default per-user launchers"
  FILES=("$HOME/.local/bin/inspector-station" "$HOME/.local/bin/inspector" "$DATA_BASE/applications/inspector.desktop"
         "$DATA_BASE/icons/hicolor/scalable/apps/inspector.svg")
fi
HOME_DIR=${HOME_OPT:-${HOME_DIR:-${INSPECTOR_HOME:-$DATA_BASE/inspector}}}
if [[ -z $CONFIG ]]; then CONFIG=${INSPECTOR_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/inspector/settings.yaml}; fi
if [[ $MODE == system && $EUID != 0 ]]; then echo "uninstall.sh: this is a system-wide install; run it with sudo" >&2; exit 2; fi

if [[ -d $PREFIX/venv ]]; then rm -rf "$PREFIX/venv"; say "removed environment $PREFIX/venv"; fi
for f in "${FILES[@]}"; do
  if [[ -e $f || -L $f ]]; then rm -f "$f"; say "removed $f"; fi
done
# only what install.sh put there; the folder itself goes only if nothing else is in it
for f in install-paths.sh uninstall.sh install.log; do rm -f "$PREFIX/$f"; done
rmdir "$PREFIX" 2>/dev/null && say "removed $PREFIX" || true
if [[ $PURGE_MODELS == 1 ]]; then
  rm -rf "$HOME_DIR/models" && say "removed model store $HOME_DIR/models"
fi
if [[ $PURGE_ALL == 1 ]]; then
  rm -rf "$HOME_DIR" "$CONFIG" && say "removed $HOME_DIR and settings $CONFIG"
  rmdir "$(dirname "$CONFIG")" 2>/dev/null || true
else
  say "kept records, profiles and settings in $HOME_DIR ($CONFIG)"
fi
