"""Records soak (not a test; prints figures): are decisions shown as saved ever lost?

    .venv/bin/python bench/records_soak.py [--trials 100] [--verify-rows 100000] [--no-tmpfs]

1. **kill -9 at random moments.** A child "station" saves decisions through
   :class:`inspector.records.RecordKeeper` (journal fsync, then SQLite) and prints each uid only
   after ``save`` returned — what the station shows as saved. The parent kills it with SIGKILL after
   a random delay, restarts a keeper on the same files (journal replay), and counts shown uids that
   are not in the database. One trial in four runs with the database refusing writes, so the
   decisions live only in the journal when the kill lands. The chain is verified after every trial.
2. **Full disk.** The database and the journal on small tmpfs mounts (root needed; ``--no-tmpfs``
   or a refused mount falls back to ``RLIMIT_FSIZE`` in the child, a per-file size limit that
   makes the same writes fail with EFBIG). Case A: both on one disk that fills. Case B: the
   database's disk fills first, the journal's (a second disk) later. The child saves until
   ``save`` raises :class:`RecordsUnavailable`; then space is given back, the keeper restarts, and
   every decision shown as saved must be in the database.
3. **verify on N rows**: time of ``SqliteRecordStore.verify`` (and the CLI) on a database of N rows.

The number that must be 0 is "shown as saved but missing".
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_CHILD = textwrap.dedent(
    """
    import os, sys, resource
    from inspector.records import InspectionRecord, RecordJournal, RecordKeeper, RecordsUnavailable, SqliteRecordStore
    db, journal, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    fsize = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    if fsize:
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    try:
        store = SqliteRecordStore(db)
    except Exception as exc:
        print("OPENFAIL", exc, flush=True)
        store = None
    keeper = RecordKeeper(store, opener=lambda: SqliteRecordStore(db), journal=RecordJournal(journal))
    if mode == "dbdown" and store is not None:
        store._con.execute("PRAGMA query_only=ON")
    print("READY", keeper.replayed, flush=True)
    i = 0
    while True:
        rec = InspectionRecord(station_id="soak", operator_id="op", profile_name="p", profile_version=1,
                               profile_hash="h" * 64, pipeline="variation", auto_verdict="PASS",
                               operator_verdict="FAIL" if i % 7 == 0 else "PASS", image_score=i / 1000,
                               image_path=f"/line/{i:06d}.png", image_sha256=f"{i:064x}",
                               note="n" * (i % 300))
        try:
            keeper.save(rec)
        except RecordsUnavailable as exc:
            print("REFUSED", str(exc).replace("\\n", " "), flush=True)
            break
        print("SAVED", rec.uid, flush=True)  # shown as saved only after save() returned
        i += 1
    """
)


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(INSPECTOR_HOME=str(home), INSPECTOR_CONFIG=str(home / "cfg" / "settings.yaml"),
               INSPECTOR_KEY_FILE=str(home / "cfg" / "station.key"), PYTHONPATH=str(REPO))
    return env


def _check(db: Path, journal: Path, env: dict[str, str], shown: set[str]) -> tuple[int, bool, int, str]:
    """Restart a keeper on the files (journal replay), count shown uids not in the database, verify."""
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    from inspector.keys import _load
    from inspector.records import RecordJournal, RecordKeeper, SqliteRecordStore

    _load.cache_clear()  # each scenario has its own key file
    store = SqliteRecordStore(db)
    keeper = RecordKeeper(store, journal=RecordJournal(journal))
    res = store.verify()
    stored = {r.uid for r in store.iter_query()}
    keeper.close()
    return len(shown - stored), res.ok, res.rows, res.message


def _run_child(args: list[str], env: dict[str, str], kill_after: float | None) -> tuple[set[str], str]:
    """Run the child station; return the uids it showed as saved (complete lines only) and its refusal."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    started: float | None = None
    while True:
        if started is not None and kill_after is not None and time.monotonic() - started >= kill_after:
            os.kill(proc.pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([fd], [], [], 0.005)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            buf += chunk
            if started is None and b"READY" in buf:
                started = time.monotonic()  # the kill clock starts when the station is up
    proc.wait()
    while True:  # lines already written before the kill were shown as saved: read them too
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        buf += chunk
    proc.stdout.close()
    shown: set[str] = set()
    end = ""
    complete = buf.split(b"\n")[:-1]  # a torn last line was never fully shown
    for raw in complete:
        ln = raw.decode("utf-8", "replace")
        if ln.startswith("SAVED "):
            shown.add(ln[6:])
        elif ln.startswith("REFUSED"):
            end = ln
        elif ln.startswith("OPENFAIL"):
            end = end or ln
    if b"READY" not in buf:
        raise RuntimeError(f"child did not start: {buf[-500:]!r}")
    return shown, end


def soak_kill(tmp: Path, trials: int, seed: int) -> None:
    rng = random.Random(seed)
    home = tmp / "kill"
    db, journal = home / "rec" / "records.sqlite", home / "disk2" / "records.journal"
    env = _env(home)
    shown_total = missing_total = 0
    bad_chain = 0
    dbdown = 0
    t0 = time.perf_counter()
    for t in range(trials):
        mode = "dbdown" if rng.random() < 0.25 else "normal"
        dbdown += mode == "dbdown"
        shown, _ = _run_child([str(db), str(journal), mode], env, kill_after=rng.uniform(0.02, 0.4))
        missing, ok, rows, msg = _check(db, journal, env, shown)
        shown_total += len(shown)
        missing_total += missing
        if not ok:
            bad_chain += 1
            print(f"  trial {t}: verify FAILED: {msg}")
        if missing:
            print(f"  trial {t}: {missing} decisions shown as saved are missing")
    print(f"kill -9: {trials} trials ({dbdown} with the database refusing writes), {shown_total} decisions shown "
          f"as saved, {missing_total} missing, chain broken after {bad_chain} trials, {rows} rows at the end "
          f"({time.perf_counter() - t0:.0f} s)")


def _mount(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


def soak_full_disk(tmp: Path, use_tmpfs: bool) -> None:
    for case in ("A: database and journal on one disk", "B: database disk full first, journal on a second disk"):
        home = tmp / ("fullA" if case.startswith("A") else "fullB")
        env = _env(home)
        d1, d2 = home / "disk1", home / "disk2"
        one_disk = case.startswith("A")
        mounted = use_tmpfs and _mount(d1, "4m" if one_disk else "2m") and (one_disk or _mount(d2, "1m"))
        fsize = 0
        if not mounted:
            fsize = 2_000_000  # RLIMIT_FSIZE fallback: each file may grow to ~2 MB
        try:
            db = d1 / "records.sqlite"
            journal = (d1 if one_disk else d2) / "records.journal"
            args = [str(db), str(journal), "normal"] + ([str(fsize)] if fsize else [])
            shown, refused = _run_child(args, env, kill_after=None)
            if mounted:  # give space back (a bigger disk), then restart the station
                subprocess.run(["mount", "-o", "remount,size=64m", str(d1)], capture_output=True)
                if not one_disk:
                    subprocess.run(["mount", "-o", "remount,size=64m", str(d2)], capture_output=True)
            missing, ok, rows, msg = _check(db, journal, env, shown)
            how = ("tmpfs 4 MB" if one_disk else "tmpfs 2 MB + 1 MB") if mounted else f"RLIMIT_FSIZE {fsize} B"
            print(f"full disk {case} ({how}): {len(shown)} shown as saved, then refused "
                  f"({'yes' if refused else 'NO'}): {refused[8:160]}…")
            print(f"    after restart: {rows} rows in the database, {missing} shown as saved but missing, "
                  f"verify {'OK' if ok else 'FAILED: ' + msg}")
        finally:
            if mounted:
                _umount(d1)
                if not one_disk:
                    _umount(d2)


def bench_verify(tmp: Path, n: int) -> None:
    sys.path.insert(0, str(REPO))
    os.environ.update(_env(tmp / "verify"))
    from inspector.records import InspectionRecord, SqliteRecordStore

    db = tmp / "verify" / "records.sqlite"
    store = SqliteRecordStore(db)
    t0 = time.perf_counter()
    batch = []
    for i in range(n):
        batch.append(InspectionRecord(
            station_id="st", operator_id="op", profile_name="demo_fabric", profile_version=3,
            profile_hash="h" * 64, pipeline="variation", auto_verdict="PASS", operator_verdict="PASS",
            image_score=i / n, image_path=f"/line/{i:06d}.png", image_sha256=f"{i:064x}",
            model_keys=["clip:ViT-B-16"], reason=None, note="", timestamp=f"2024-05-01T10:00:00.{i % 999999:06d}Z"))
        if len(batch) == 1000:
            store.append_many(batch)  # 1000-row transactions (the cost here is building, not verify)
            batch = []
    if batch:
        store.append_many(batch)
    store.close()
    # the station signs one checkpoint per append: give the sidecar the same n lines verify must check
    from inspector.keys import station_key
    from inspector.records import Checkpoint, checkpoints_path

    key = station_key()
    ro = SqliteRecordStore(db, read_only=True)
    lines = [Checkpoint.make(int(r.id or 0), r.row_hash, key).to_json() for r in ro.iter_query()]
    ro.close()
    checkpoints_path(db).write_text("\n".join(lines) + "\n")
    t_build = time.perf_counter() - t0
    size = db.stat().st_size
    ro = SqliteRecordStore(db, read_only=True)
    t0, c0 = time.perf_counter(), time.process_time()
    res = ro.verify()
    t_verify, c_verify = time.perf_counter() - t0, time.process_time() - c0
    ro.close()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "inspector", "records", "verify", "--db", str(db)],
                          env=dict(os.environ), capture_output=True, text=True)
    t_cli = time.perf_counter() - t0
    load = os.getloadavg()[0]
    print(f"verify on {n} rows: {t_verify:.2f} s wall / {c_verify:.2f} s CPU in-process "
          f"({'OK' if res.ok else res.message}; load average {load:.1f} on {os.cpu_count()} CPUs), "
          f"{t_cli:.2f} s via `inspector records verify` (exit {proc.returncode}); database {size / 1e6:.1f} MB, "
          f"{checkpoints_path(db).stat().st_size / 1e6:.1f} MB of checkpoints; built in {t_build:.1f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--verify-rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--no-tmpfs", action="store_true", help="use the RLIMIT_FSIZE fallback for the full disk")
    ap.add_argument("--skip", action="append", default=[], choices=("kill", "full", "verify"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="records-soak-"))
    try:
        if "kill" not in args.skip:
            soak_kill(tmp, args.trials, args.seed)
        if "full" not in args.skip:
            soak_full_disk(tmp, use_tmpfs=not args.no_tmpfs and os.geteuid() == 0)
        if "verify" not in args.skip:
            bench_verify(tmp, args.verify_rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    raise SystemExit(main())
