"""A simulated plant on loopback: 3 station processes, one PostgreSQL server, one MQTT broker.

    .venv/bin/python bench/plant.py [--parts 10000] [--rate 40] [--out plant.json]

Each station process saves its parts through the real station path: a RecordKeeper (fsynced
journal, then the PostgreSQL store; store-and-forward while the server is away) and an
output Dispatcher (MQTT lane, QoS 1, on-disk queue). The verdicts are the real weight-free
Inspector's on the demo line (computed once here, then cycled: the pipeline's own speed is
bench/variation.py's business). During the run the script

- kills one station with SIGKILL and restarts it (it resumes after its last logged part);
- restarts the PostgreSQL server;
- stops the broker for 30 s;

then waits for every backlog to drain and reports parts in vs PostgreSQL rows vs MQTT messages
(lost, duplicated), p50/p99 from verdict to PostgreSQL commit (``track_commit_timestamp``)
and to MQTT arrival, every station chain verified with its key, and a throughput sweep: how
many appends per second one PostgreSQL server takes from 1..N concurrent stations here.
Needs the Debian packages postgresql and mosquitto, and the ``plant`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import Mosquitto, Postgres  # noqa: E402

STATIONS = ("st1", "st2", "st3")


def _ts_seconds(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


# --------------------------------------------------------------------------- verdicts (real Inspector)
def demo_verdicts(work: Path) -> list[dict]:
    """The real weight-free Inspector's verdicts on a small demo line (every category, good + defects)."""
    from inspector import demo
    from inspector.imaging import read_image
    from inspector.inspection import Inspector
    from inspector.models.hub import ModelHub
    from inspector.profile import load_profile

    line = demo.generate_demo_line(work / "line", seed=0, n_train=demo.REFERENCE_SHOTS, n_test_good=3, n_per_defect=2)
    demo.write_demo_profiles(work / "profiles", line)
    hub = ModelHub(device="cpu", precision="fp32")
    out = []
    for cat in demo.CATEGORIES:
        profile = load_profile(work / "profiles" / f"demo_{cat}")
        ins = Inspector(profile, hub)
        for img in sorted((line / cat / "test").rglob("*.png")):
            res = ins.inspect(read_image(img), img)
            out.append({"profile": profile.name, "version": profile.version, "hash": profile.content_hash(),
                        "image": f"{cat}/{img.parent.name}/{img.name}", "verdict": res.verdict,
                        "score": float(res.image_score), "seconds": res.seconds})
    return out


# --------------------------------------------------------------------------- one station process
def run_station(args: argparse.Namespace) -> int:
    import logging

    from inspector.outputs import OutputsConfig, build_dispatcher
    from inspector.records import InspectionRecord, RecordJournal, RecordKeeper, RecordStoreError
    from inspector.records_pg import PostgresRecordStore

    logging.basicConfig(level=logging.ERROR)
    work = Path(args.work)
    verdicts = json.loads(Path(args.verdicts).read_text())
    log_path = work / "parts.log"
    done = -1
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            if line.strip():
                done = max(done, int(line.split()[0]))
    store = PostgresRecordStore(args.url, station_id=args.id, connect_timeout_s=1, retry_connect_s=1.0)
    keeper = RecordKeeper(store, journal=RecordJournal(work / "records.journal"))
    cfg = OutputsConfig.parse({"queue_dir": str(work / "outputs"), "retry_initial_s": 0.2, "retry_max_s": 2.0,
                               "mqtt": {"port": args.mqtt_port, "topic_prefix": "plant", "ack_timeout_s": 2.0}})
    dispatcher = build_dispatcher(cfg, args.id)
    period = 1.0 / args.rate
    next_t = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as log:
        for i in range(done + 1, args.parts):
            v = verdicts[(i * 7 + int(args.id[-1])) % len(verdicts)]
            override = i % 37 == 0
            no_read = i % 101 == 0
            oper = None if no_read else ("FAIL" if v["verdict"] == "PASS" else "PASS") if override else v["verdict"]
            rec = InspectionRecord(
                station_id=args.id, operator_id=f"op-{args.id}", profile_name=v["profile"], profile_version=v["version"],
                profile_hash=v["hash"], pipeline="variation", auto_verdict=None if no_read else v["verdict"],
                operator_verdict=oper, image_score=None if no_read else v["score"], image_path=v["image"],
                kind="no_read" if no_read else "decision", reason="no part in view" if no_read else None,
                duration_s=v["seconds"], uid=f"{args.id}-{i:06d}", role="operator")
            try:
                keeper.save(rec)  # journal (fsync) then PostgreSQL; None = waiting in the journal
            except RecordStoreError as exc:
                print(f"{args.id}: decision refused: {exc}", file=sys.stderr)
                return 1
            dispatcher.publish_record(rec)
            log.write(f"{i} {rec.uid} {rec.timestamp}\n")
            log.flush()
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()
    deadline = time.monotonic() + args.drain_s
    while time.monotonic() < deadline:
        keeper.retry()
        if keeper.backlog == 0 and dispatcher.backlog_total == 0:
            break
        time.sleep(0.2)
    left = (keeper.backlog, dispatcher.backlog_total)
    dispatcher.close()
    keeper.close()
    print(json.dumps({"station": args.id, "records_backlog": left[0], "mqtt_backlog": left[1]}))
    return 0 if left == (0, 0) else 1


# --------------------------------------------------------------------------- throughput writers
def run_writer(args: argparse.Namespace) -> int:
    from inspector.records import InspectionRecord
    from inspector.records_pg import PostgresRecordStore

    store = PostgresRecordStore(args.url, key=os.urandom(32), station_id=args.id)
    n = 0
    start = time.monotonic()
    while time.monotonic() - start < args.seconds:
        store.append(InspectionRecord(station_id=args.id, operator_id="op", profile_name="demo_pcb", profile_version=1,
                                      profile_hash="h", pipeline="variation", auto_verdict="PASS",
                                      operator_verdict="PASS", image_score=0.1))
        n += 1
    print(json.dumps({"n": n, "seconds": time.monotonic() - start}))
    return 0


# --------------------------------------------------------------------------- OPC UA handshake timing
def run_opcua(args: argparse.Namespace) -> int:
    """Handshake overhead: a handler that answers at once, a real asyncua client doing N cycles."""
    import asyncio

    from asyncua import Client, ua

    from inspector.outputs.opcua import NAMESPACE, OpcUaStation, TriggerResult
    from tests.support.servers import free_port

    url = f"opc.tcp://127.0.0.1:{free_port()}/inspector/"
    server = OpcUaStation(lambda i, r: TriggerResult("OK", 0.25), ["demo_pcb"], endpoint=url, poll_s=args.poll_s)
    server.start()

    async def cycles() -> tuple[list[float], list[float]]:
        to_result, to_ready = [], []
        async with Client(url) as client:
            idx = await client.get_namespace_index(NAMESPACE)
            st = await client.nodes.objects.get_child([f"{idx}:Station"])
            n = {k: await st.get_child([f"{idx}:{k}"]) for k in ("Trigger", "Ack", "Ready", "Busy")}

            async def until(name: str, value: bool) -> None:
                while await n[name].read_value() != value:
                    await asyncio.sleep(0.001)

            for _ in range(args.cycles):
                await until("Ready", True)
                t0 = time.perf_counter()
                await n["Trigger"].write_value(ua.Variant(True, ua.VariantType.Boolean))
                await until("Ready", False)
                await until("Busy", False)
                to_result.append(time.perf_counter() - t0)
                await n["Ack"].write_value(ua.Variant(True, ua.VariantType.Boolean))
                await until("Ready", True)
                to_ready.append(time.perf_counter() - t0)
        return to_result, to_ready

    try:
        to_result, to_ready = asyncio.run(cycles())
    finally:
        server.stop()
    print(json.dumps({"cycles": args.cycles, "poll_s": args.poll_s,
                      "trigger_to_result_p50_ms": round(1000 * pct(to_result, 0.5), 1),
                      "trigger_to_result_p99_ms": round(1000 * pct(to_result, 0.99), 1),
                      "full_cycle_p50_ms": round(1000 * pct(to_ready, 0.5), 1),
                      "full_cycle_p99_ms": round(1000 * pct(to_ready, 0.99), 1)}))
    return 0


# --------------------------------------------------------------------------- the plant
class Subscriber:
    """The line's listener: a persistent QoS 1 session on plant/+/result, arrival times per message."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.received: list[tuple[str, float, str]] = []  # uid, arrival, verdict timestamp
        self._lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="plant-line",
                                  clean_session=False)
        self.client.on_connect = lambda c, *a: c.subscribe("plant/+/result", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        d = json.loads(msg.payload)
        with self._lock:
            self.received.append((d["uid"], time.time(), d["timestamp"]))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def station_cmd(sid: str, work: Path, url: str, mqtt_port: int, parts: int, rate: float, verdicts: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "station", "--id", sid, "--work", str(work / sid),
            "--url", url, "--mqtt-port", str(mqtt_port), "--parts", str(parts), "--rate", str(rate),
            "--verdicts", str(verdicts)]


def station_env(work: Path, sid: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(INSPECTOR_HOME=str(work / sid / "home"), INSPECTOR_CONFIG=str(work / sid / "home" / "settings.yaml"),
               INSPECTOR_KEY_FILE=str(work / sid / "station.key"), PYTHONPATH=str(ROOT))
    return env


def throughput(url: str, work: Path, writers: int, seconds: float) -> dict:
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "writer", "--url", url, "--id",
                               f"w{writers}-{k}", "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True,
                              env=station_env(work, f"w{writers}-{k}")) for k in range(writers)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    total = sum(r["n"] for r in results)
    return {"writers": writers, "appends": total, "appends_per_s": round(total / seconds, 1)}


def plant(args: argparse.Namespace) -> dict:
    from inspector.records_pg import PostgresRecordStore, init_schema

    work = Path(tempfile.mkdtemp(prefix="inspector-plant-"))
    os.environ.update(station_env(work, "plant"))  # caches and keys of this script stay in its temp folder
    t_setup = time.monotonic()
    verdicts = demo_verdicts(work / "demo")
    vfile = work / "verdicts.json"
    vfile.write_text(json.dumps(verdicts))
    pg = Postgres(work / "pg", fsync=True, options="-c track_commit_timestamp=on").init().start()
    # the line's listener may be away while the stations drain a 30 s backlog: let the broker queue it
    # (mosquitto's default max_queued_messages is 1000 per client; beyond that it drops QoS 1 messages)
    broker = Mosquitto(work / "broker", persistence=True, extra=("max_queued_messages 0",)).start()
    res = init_schema(pg.url(), station_password="station-pw", reader_password="qa-pw")
    assert res.station_url and res.reader_url
    sub = Subscriber(broker.port)
    per = [args.parts // 3 + (1 if k < args.parts % 3 else 0) for k in range(3)]
    procs: dict[str, subprocess.Popen] = {}
    logs = {sid: open(work / f"{sid}.out", "a") for sid in STATIONS}  # noqa: SIM115
    for sid, n in zip(STATIONS, per, strict=True):
        (work / sid).mkdir(parents=True, exist_ok=True)
        procs[sid] = subprocess.Popen(station_cmd(sid, work, res.station_url, broker.port, n, args.rate, vfile),
                                      env=station_env(work, sid), stdout=logs[sid], stderr=logs[sid])
    t0 = time.monotonic()
    events: list[str] = []
    marks: dict[str, float] = {}  # wall clock of each disturbance, for the steady-state figures

    def mark(name: str) -> None:
        marks[name] = time.time()
        events.append(f"{time.monotonic() - t0:.1f}s {name}")

    def at(t: float) -> None:
        while time.monotonic() - t0 < t:
            time.sleep(0.05)

    at(10)
    procs["st2"].send_signal(signal.SIGKILL)
    procs["st2"].wait()
    mark("kill -9 st2")
    at(13)
    procs["st2"] = subprocess.Popen(station_cmd("st2", work, res.station_url, broker.port, per[1], args.rate, vfile),
                                    env=station_env(work, "st2"), stdout=logs["st2"], stderr=logs["st2"])
    mark("st2 restarted")
    at(22)
    pg.stop("fast")
    mark("PostgreSQL stopped")
    pg.start()
    mark("PostgreSQL started")
    at(32)
    broker.stop()
    mark("broker stopped")
    at(62)
    broker.start()
    mark("broker started")
    rcs = {sid: p.wait(timeout=600) for sid, p in procs.items()}
    events.append(f"{time.monotonic() - t0:.1f}s all stations done and drained")
    time.sleep(2.0)  # the last QoS 1 deliveries to the listener
    sub.close()
    run_s = time.monotonic() - t0

    # ---------------------------------------------------------------- counting
    parts: dict[str, str] = {}
    for sid in STATIONS:
        for line in (work / sid / "parts.log").read_text().splitlines():
            if line.strip():
                _, uid, ts = line.split()
                parts.setdefault(uid, ts)
    import psycopg

    with psycopg.connect(pg.url(), autocommit=True) as con:
        rows = con.execute("SELECT uid, timestamp, extract(epoch from pg_xact_commit_timestamp(xmin)) "
                           "FROM inspector.inspections").fetchall()
    pg_uids = [r[0] for r in rows]
    windows = [(marks["kill -9 st2"] - 1, marks["st2 restarted"] + 5),
               (marks["PostgreSQL stopped"] - 1, marks["PostgreSQL started"] + 5),
               (marks["broker stopped"] - 1, marks["broker started"] + 5)]

    def steady(ts: str) -> bool:  # decided well away from every disturbance
        s = _ts_seconds(ts)
        return not any(a <= s <= b for a, b in windows)

    pg_lat = [float(r[2]) - _ts_seconds(r[1]) for r in rows if r[2] is not None]
    pg_steady = [float(r[2]) - _ts_seconds(r[1]) for r in rows if r[2] is not None and steady(r[1])]
    mq_uids = [u for u, _, _ in sub.received]
    first_arrival: dict[str, float] = {}
    for uid, arrival, ts in sub.received:
        first_arrival.setdefault(uid, arrival - _ts_seconds(ts))
    mq_lat = list(first_arrival.values())
    stamp = {uid: ts for uid, _, ts in sub.received}
    mq_steady = [lat for uid, lat in first_arrival.items() if steady(stamp[uid])]
    verify = {}
    from inspector.keys import station_key

    for sid in STATIONS:
        key = station_key(work / sid / "station.key")
        r = PostgresRecordStore(res.reader_url, keys={sid: key}, read_only=True).verify(station=sid)
        verify[sid] = {"ok": r.ok, "rows": r.rows, "message": r.message}

    sweep = [throughput(res.station_url, work, n, args.sweep_s) for n in (1, 4, 12)]
    report = {
        "setup_s": round(t0 - t_setup, 1), "run_s": round(run_s, 1), "rate_per_station": args.rate,
        "events": events, "station_exit_codes": rcs,
        "parts_in": len(parts),
        "postgres": {"rows": len(pg_uids), "unique": len(set(pg_uids)), "lost": len(set(parts) - set(pg_uids)),
                     "extra": len(set(pg_uids) - set(parts)), "dup": len(pg_uids) - len(set(pg_uids)),
                     "p50_s": round(pct(pg_lat, 0.5), 4), "p99_s": round(pct(pg_lat, 0.99), 3),
                     "max_s": round(max(pg_lat), 2) if pg_lat else None,
                     "steady_parts": len(pg_steady), "steady_p50_s": round(pct(pg_steady, 0.5), 4),
                     "steady_p99_s": round(pct(pg_steady, 0.99), 4)},
        "mqtt": {"messages": len(mq_uids), "unique": len(set(mq_uids)), "lost": len(set(parts) - set(mq_uids)),
                 "dup_messages": len(mq_uids) - len(set(mq_uids)),
                 "p50_s": round(pct(mq_lat, 0.5), 4), "p99_s": round(pct(mq_lat, 0.99), 3),
                 "max_s": round(max(mq_lat), 2) if mq_lat else None,
                 "steady_parts": len(mq_steady), "steady_p50_s": round(pct(mq_steady, 0.5), 4),
                 "steady_p99_s": round(pct(mq_steady, 0.99), 4)},
        "verify": verify,
        "throughput_sweep": sweep,
        "verdict_set": {"images": len(verdicts), "fail": sum(v["verdict"] == "FAIL" for v in verdicts),
                        "median_inspect_s": round(statistics.median(v["seconds"] for v in verdicts), 4)},
        "work": None,
    }
    broker.stop()
    pg.remove()
    for fh in logs.values():
        fh.close()
    clean = (report["postgres"]["lost"] == 0 and report["mqtt"]["lost"] == 0 and not any(rcs.values()))
    if args.keep or not clean:
        report["work"] = str(work)  # station logs (stN.out), journals and queues, for a look
    else:
        shutil.rmtree(work, ignore_errors=True)
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    st = sub.add_parser("station")
    st.add_argument("--id", required=True)
    st.add_argument("--work", required=True)
    st.add_argument("--url", required=True)
    st.add_argument("--mqtt-port", type=int, required=True)
    st.add_argument("--parts", type=int, required=True)
    st.add_argument("--rate", type=float, default=40.0)
    st.add_argument("--verdicts", required=True)
    st.add_argument("--drain-s", type=float, default=120.0)
    wr = sub.add_parser("writer")
    wr.add_argument("--url", required=True)
    wr.add_argument("--id", required=True)
    wr.add_argument("--seconds", type=float, default=4.0)
    op = sub.add_parser("opcua", help="OPC UA handshake timing only")
    op.add_argument("--cycles", type=int, default=200)
    op.add_argument("--poll-s", type=float, default=0.01)
    ap.add_argument("--parts", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=40.0, help="parts per second per station")
    ap.add_argument("--sweep-s", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (station logs, journals, queues)")
    args = ap.parse_args()
    if args.cmd == "station":
        return run_station(args)
    if args.cmd == "writer":
        return run_writer(args)
    if args.cmd == "opcua":
        return run_opcua(args)
    result = plant(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    ok = (result["postgres"]["lost"] == 0 and result["postgres"]["dup"] == 0 and result["mqtt"]["lost"] == 0
          and all(v["ok"] for v in result["verify"].values()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
