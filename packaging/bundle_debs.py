"""Which of a bundle's Debian packages (``debs/``) this machine needs. Standard library only.

``build_bundle --debs`` downloads the desktop packages and their whole dependency closure,
alternatives included (``libsystemd0 | libelogind0``). Installing all of it would replace parts of
the target's base system, so ``install.sh`` asks this module for the smallest set instead: the
wanted packages that are not installed, plus, for each unmet ``Depends``/``Pre-Depends`` clause,
the first alternative the bundle carries. A clause is met when any alternative is installed or
provided by an installed package. Versions are not compared: build the bundle on the target's
release.

    bundle_debs.py select DEBS_DIR PACKAGE...     prints the .deb files to give to ``dpkg -i``
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True,
                          text=True).stdout.strip()


def parse_depends(text: str) -> list[list[str]]:
    """``"a (>= 1), b:any | c"`` -> ``[["a"], ["b", "c"]]``: clauses of alternatives, bare names."""
    clauses = []
    for clause in text.replace("\n", " ").split(","):
        names = [re.split(r"[\s(:\[<]", alt.strip(), maxsplit=1)[0] for alt in clause.split("|")]
        names = [n for n in names if n]
        if names:
            clauses.append(names)
    return clauses


def installed_names() -> set[str]:
    """Installed packages and everything they provide."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status} ${Package} ${Provides}\n"],
                         capture_output=True, text=True).stdout
    names: set[str] = set()
    for line in out.splitlines():
        status, _, rest = line.partition(" ")
        if status != "installed":
            continue
        pkg, _, provides = rest.partition(" ")
        names.add(pkg)
        names.update(n for clause in parse_depends(provides) for n in clause)
    return names


def select(debs_dir: Path, wanted: list[str], installed: set[str] | None = None) -> list[Path]:
    """The .deb files to install so that every ``wanted`` package is installed afterwards."""
    installed = installed_names() if installed is None else installed
    carried: dict[str, Path] = {}
    for deb in sorted(Path(debs_dir).glob("*.deb")):
        carried.setdefault(_field(deb, "Package"), deb)
    chosen: dict[str, Path] = {}
    todo = [[w] for w in wanted]
    while todo:
        clause = todo.pop(0)
        if any(n in installed or n in chosen for n in clause):
            continue
        pick = next((n for n in clause if n in carried), None)
        if pick is None:
            raise LookupError(f"{' | '.join(clause)}: neither installed here nor carried in {debs_dir}")
        chosen[pick] = carried[pick]
        deb = carried[pick]
        todo.extend(parse_depends(_field(deb, "Pre-Depends")) + parse_depends(_field(deb, "Depends")))
    return list(chosen.values())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "select":
        print("usage: bundle_debs.py select DEBS_DIR PACKAGE...", file=sys.stderr)
        return 2
    try:
        for deb in select(Path(args[1]), args[2:]):
            print(deb)
    except (LookupError, OSError, subprocess.CalledProcessError) as exc:
        print(f"cannot choose the Debian packages to install: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
