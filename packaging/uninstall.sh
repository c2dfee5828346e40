#!/usr/bin/env bash
# Remove Inspector's application environment and launchers. Records, profiles, settings and model
# weights are kept unless asked:
#
#   ./uninstall.sh [--prefix DIR] [--home DIR] [--purge-models] [--purge-all --yes]
#
#   --purge-models   also delete the model store (weights can be re-imported from a bundle)
#   --purge-all      also delete records, profiles and settings (needs --yes; records are QA evidence)
set -euo pipefail
PREFIX=${INSPECTOR_PREFIX:-$HOME/.local/share/inspector/app}
HOME_DIR=${INSPECTOR_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/inspector}
PURGE_MODELS=0; PURGE_ALL=0; YES=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --home) HOME_DIR=$2; shift 2 ;;
    --purge-models) PURGE_MODELS=1; shift ;;
    --purge-all) PURGE_ALL=1; shift ;;
    --yes) YES=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
say() { printf '[uninstall] %s\n' "$*"; }

rm -rf "$PREFIX/venv" && say "removed environment $PREFIX/venv"
rmdir "$PREFIX" 2>/dev/null || true
for f in "$HOME/.local/bin/inspector-station" "$HOME/.local/bin/inspector" \
         "${XDG_DATA_HOME:-$HOME/.local/share}/applications/inspector.desktop"; do
  if [[ -e $f || -L $f ]]; then rm -f "$f"; say "removed $f"; fi
done
if [[ $PURGE_MODELS == 1 ]]; then
  rm -rf "$HOME_DIR/models" && say "removed model store $HOME_DIR/models"
fi
if [[ $PURGE_ALL == 1 ]]; then
  if [[ $YES != 1 ]]; then
    echo "refusing to delete records and profiles without --yes" >&2; exit 2
  fi
  rm -rf "$HOME_DIR" "${XDG_CONFIG_HOME:-$HOME/.config}/inspector" && say "removed $HOME_DIR and settings"
else
  say "kept records, profiles and settings in $HOME_DIR"
fi
