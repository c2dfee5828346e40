"""The station's PLC link: a real asyncua client drives the OPC UA handshake against the station window.

No mocks: the server is the station's own asyncua server on 127.0.0.1, the frames come from a
real hot folder / folder of demo-line images, and the inspection is the station worker's
weight-free Inspector, checked against an Inspector built independently on the same files.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

pytest.importorskip("asyncua", reason="asyncua missing: install the 'plant' extra")

from asyncua import Client, ua  # noqa: E402

from inspector import demo  # noqa: E402
from inspector.imaging import read_image  # noqa: E402
from inspector.inspection import Inspector  # noqa: E402
from inspector.models.hub import ModelHub  # noqa: E402
from inspector.outputs.config import OpcUaOutput, OutputConfigError, resolve_recipes  # noqa: E402
from inspector.outputs.station_link import OpcUaLink  # noqa: E402
from inspector.profile import load_profile  # noqa: E402
from inspector.records import SqliteRecordStore  # noqa: E402
from inspector.ui.app import build_opcua_link, run_station  # noqa: E402
from tests.support.servers import free_port  # noqa: E402
from tests.support.opcua_plc import station_nodes  # noqa: E402
from tests.support.opcua_plc import until as wait_for  # noqa: E402
from tests.ui.station_support import key, load, login, make_window, users, users_file  # noqa: E402,F401

SERVER_START_MS = 30_000
PLC_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def demo_line(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plc")
    line = demo.generate_demo_line(root / "line", seed=0, categories=["washer", "fabric"],
                                   n_train=demo.REFERENCE_SHOTS, n_test_good=2, n_per_defect=1)
    demo.write_demo_profiles(root / "profiles", line)
    return {"line": line, "profiles": root / "profiles"}


def _camera_files(demo_line: dict[str, Path], dest: Path) -> list[Path]:
    """What the camera drops: two good washers, a defective washer, then a good fabric."""
    line = demo_line["line"]
    washer = line / "washer" / "test"
    defect = sorted(p for p in washer.iterdir() if p.is_dir() and p.name != "good")[0]
    shots = [*sorted((washer / "good").glob("*.png")), defect / "000.png",
             sorted((line / "fabric" / "test" / "good").glob("*.png"))[0]]
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(shots):
        out.append(dest / f"{i:03d}_{src.parents[2].name}_{src.parent.name}.png")
        shutil.copyfile(src, out[-1])
    return out


def _plc_settings(station_settings, demo_line, port: int, **opcua):
    return station_settings.model_copy(update={
        "profiles_dir": demo_line["profiles"],
        "outputs": {"opcua": {"endpoint": f"opc.tcp://127.0.0.1:{port}/inspector/",
                              "recipes": ["demo_fabric", "demo_washer"], **opcua}}})


async def _plc(url: str, recipes: list[int]) -> list[dict[str, object]]:
    """The PLC: per part write RecipeIndex and Trigger=1, wait until Busy falls, read, Ack, wait Ready."""
    answers = []
    async with Client(url, timeout=30) as client:
        n = await station_nodes(client)

        async def until(name: str, value: object) -> None:
            await wait_for(n, name, value, 90.0)

        for recipe in recipes:
            await until("Ready", True)
            await n["RecipeIndex"].write_value(ua.Variant(recipe, ua.VariantType.Int32))
            t_trigger = time.time()
            await n["Trigger"].write_value(ua.Variant(True, ua.VariantType.Boolean))
            await until("Ready", False)
            await until("Busy", False)
            answers.append({k: await n[k].read_value() for k in ("Result", "Score", "Recipe", "Error", "PartCount")})
            answers[-1]["t"], answers[-1]["t_result"] = t_trigger, time.time()
            await n["Ack"].write_value(ua.Variant(True, ua.VariantType.Boolean))
            await until("Ready", True)
    return answers


def _run_plc(qtbot, url: str, recipes: list[int]) -> list[dict[str, object]]:
    """Run the PLC in its own thread while the station's event loop keeps running (the operator's view)."""
    out: dict[str, object] = {}

    def main() -> None:
        try:
            out["answers"] = asyncio.run(_plc(url, recipes))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            out["error"] = exc

    t = threading.Thread(target=main, daemon=True)
    t.start()
    qtbot.waitUntil(lambda: not t.is_alive(), timeout=PLC_TIMEOUT_MS)
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["answers"]  # type: ignore[return-value]


def _wait_listening(qtbot, win) -> None:
    qtbot.waitUntil(lambda: win.opcua_label.text() == "OPC UA ✔", timeout=SERVER_START_MS)


def test_plc_trigger_inspects_the_station_source_and_the_operator_decides(
        qtbot, station_settings, qsettings, users, demo_line, tmp_path) -> None:
    port = free_port()
    settings = _plc_settings(station_settings, demo_line, port, grab_timeout_s=3)
    link = build_opcua_link(settings)  # what run_station builds from the settings
    assert isinstance(link, OpcUaLink) and list(link.recipes) == ["demo_fabric", "demo_washer"]
    win = make_window(qtbot, settings, qsettings, users, opcua=link)
    win.show()
    qtbot.waitExposed(win)
    _wait_listening(qtbot, win)
    login(qtbot, win)
    hot = tmp_path / "camera"
    files = _camera_files(demo_line, hot)
    win.hot_existing.setCurrentIndex(win.hot_existing.findData("inspect"))
    assert win.start_source("hot", str(hot))  # no profile yet: the PLC's recipe loads it
    assert win.profile_info is None

    url = link.endpoint
    answers = _run_plc(qtbot, url, [1, 1, 1, 0, 0, 7])  # washer ×3, fabric, an empty camera, an unknown recipe

    # the parts the station took, in Trigger order: keys 1.. of the operator's review
    qtbot.waitUntil(lambda: len(win.review.order) == 5, timeout=30_000)
    taken = [win.review.results[k] for k in win.review.order]
    assert [r.frame.path.name for r in taken[:4]] == [f.name for f in files]
    # expected answers, computed independently: an Inspector of each recipe's profile on the same file
    hub = ModelHub(device="cpu", precision="fp32")
    inspectors = {name: Inspector(load_profile(demo_line["profiles"] / name), hub)
                  for name in ("demo_washer", "demo_fabric")}
    expected = []
    for path, recipe in zip(files, ["demo_washer"] * 3 + ["demo_fabric"]):
        ins = inspectors[recipe].inspect(read_image(path), path)
        expected.append(("OK" if ins.verdict == "PASS" else "NG", pytest.approx(ins.image_score, rel=1e-5), recipe))
    assert [(a["Result"], a["Score"], a["Recipe"]) for a in answers[:4]] == expected
    assert {a["Result"] for a in answers[:3]} == {"OK", "NG"}  # good and defective washers told apart
    assert all(a["Error"] == "" for a in answers[:4])
    assert answers[4]["Result"] == "NO-READ" and "no frame from" in answers[4]["Error"]
    assert answers[5]["Result"] == "NO-READ" and "recipe index 7 is not configured" in answers[5]["Error"]
    assert [a["PartCount"] for a in answers] == [1, 2, 3, 4, 5, 6]
    # RecipeIndex 0 switched the station (and the operator view) to demo_fabric
    assert win.profile_info is not None and win.profile_info.profile.name == "demo_fabric"
    assert "demo_fabric" in win.model_label.text()
    # what the operator sees: the parts in Trigger order, the same inspection the PLC was answered with
    assert [r.inspection.image_score for r in taken[:4]] == [e[1] for e in expected]
    assert taken[4].error and "no frame" in taken[4].error
    qtbot.waitUntil(lambda: win.review.current_key() == win.review.order[0], timeout=10_000)
    key(qtbot, win, Qt.Key.Key_A)  # the operator passes the first part, whatever the PLC was told
    rows = win.store.query()
    decision = next(r for r in rows if r.kind == "decision")
    assert decision.image_path == str(files[0]) and decision.operator_verdict == "PASS"
    assert decision.auto_verdict == ("PASS" if expected[0][0] == "OK" else "FAIL")
    no_read = next(r for r in rows if r.kind == "no_read")
    assert "no frame from" in (no_read.reason or "") and no_read.image_path is None
    win._update_backlog()
    assert "6 Trigger(s) answered; last inspected: NO-READ (demo_fabric): no frame" in win.opcua_label.toolTip()
    win.close()
    store = SqliteRecordStore(settings.records_path)  # read back what the closed station wrote
    kinds = sorted(r.kind for r in store.query())
    assert store.verify().ok
    store.close()
    assert kinds == ["decision", "no_read", "not_decided", "not_decided", "not_decided"]  # every Trigger's part
    assert link.state == "off"
    with pytest.raises(OSError):  # closing the station stopped the server
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_plc_folder_source_one_image_per_trigger(qtbot, station_settings, qsettings, users, demo_line, station_env,
                                                 tmp_path) -> None:
    port = free_port()
    broken = str(station_env["weights"])  # a profile whose model weights are not installed: it cannot load
    settings = _plc_settings(station_settings, demo_line, port, recipes=["demo_fabric", "demo_washer", broken])
    win = make_window(qtbot, settings, qsettings, users, opcua=build_opcua_link(settings))
    _wait_listening(qtbot, win)
    login(qtbot, win)
    files = _camera_files(demo_line, tmp_path / "folder")
    files[3].unlink()
    files = files[:3]  # two good washers and a defective one
    assert win.start_source("folder", str(tmp_path / "folder"))
    assert win.review.mode == "stream" and win.folder is None  # not reviewed by index: taken at each Trigger
    answers = _run_plc(qtbot, win.opcua.endpoint, [1, 2, 1, 1])
    washer = Inspector(load_profile(demo_line["profiles"] / "demo_washer"), ModelHub(device="cpu", precision="fp32"))
    expected = [washer.inspect(read_image(f), f) for f in (files[0], files[2])]
    assert [(a["Result"], a["Score"]) for a in (answers[0], answers[2])] == [
        ("OK" if e.verdict == "PASS" else "NG", pytest.approx(e.image_score, rel=1e-5)) for e in expected]
    assert answers[1]["Result"] == "NO-READ" and answers[1]["Recipe"] == "needs_weights"
    assert "profile needs_weights could not be loaded" in answers[1]["Error"]
    assert answers[3]["Result"] == "NO-READ" and "no more frames" in answers[3]["Error"]
    qtbot.waitUntil(lambda: len(win.review.order) == 4, timeout=30_000)
    assert [win.review.results[k].frame.path.name for k in win.review.order[:3]] == [f.name for f in files]
    assert win.profile_info.profile.name == "demo_washer"  # the working profile stayed loaded
    no_reads = [r for r in win.store.query() if r.kind == "no_read"]
    assert [(r.image_path, r.profile_name) for r in no_reads] == [(str(files[1]), "demo_washer"), (None, "demo_washer")]
    assert "could not be loaded" in no_reads[0].reason and "no more frames" in no_reads[1].reason
    win.close()


def test_plc_video_source_takes_the_first_frame_after_the_trigger(qtbot, station_settings, qsettings, users,
                                                                   demo_line, tmp_path) -> None:
    import cv2

    good = sorted((demo_line["line"] / "washer" / "test" / "good").glob("*.png"))
    video = tmp_path / "line.avi"
    first = read_image(good[0])
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (first.shape[1], first.shape[0]))
    for i in range(30):  # 3 s at 10 fps, looped by the station like a camera
        writer.write(cv2.cvtColor(read_image(good[i % len(good)]), cv2.COLOR_RGB2BGR))
    writer.release()
    settings = _plc_settings(station_settings, demo_line, free_port())
    win = make_window(qtbot, settings, qsettings, users, opcua=build_opcua_link(settings))
    _wait_listening(qtbot, win)
    login(qtbot, win)
    assert win.start_source("video", str(video))
    assert win.review.mode == "stream"  # every Trigger is a part to account for, not a live view
    qtbot.wait(800)  # the camera runs; nothing is inspected until the PLC triggers
    assert win.review.order == [] and win.worker.queue_depth() == 0
    answers = _run_plc(qtbot, win.opcua.endpoint, [1, 1])
    qtbot.waitUntil(lambda: len(win.review.order) == 2, timeout=30_000)
    taken = [win.review.results[k] for k in win.review.order]
    washer = Inspector(load_profile(demo_line["profiles"] / "demo_washer"), ModelHub(device="cpu", precision="fp32"))
    for answer, res in zip(answers, taken):
        assert res.frame.timestamp >= answer["t"]  # captured after the PLC raised Trigger, not an older one
        assert answer["Score"] == pytest.approx(washer.inspect(res.frame.image).image_score, rel=1e-5)
    assert taken[1].frame.index > taken[0].frame.index
    win.close()


def test_a_port_in_use_leaves_the_station_running(qtbot, station_settings, qsettings, users, demo_line) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        settings = _plc_settings(station_settings, demo_line, port)
        win = make_window(qtbot, settings, qsettings, users, opcua=build_opcua_link(settings))
        win.show()
        qtbot.waitExposed(win)
        assert win.opcua_label.text() == "OPC UA starting…"
        login(qtbot, win)
        good = demo_line["line"] / "washer" / "test" / "good"
        win.start_source("folder", str(good))  # while starting it goes to the PLC link ...
        qtbot.waitUntil(lambda: "OPC UA off" in win.opcua_label.text(), timeout=SERVER_START_MS)
        assert "address already in use" in win.opcua_label.toolTip()
        assert f"127.0.0.1:{port}" in win.opcua_label.toolTip()
        assert "PLC link (OPC UA) off" in win.statusBar().currentMessage()
        assert not win.opcua.attached  # ... and runs as without a PLC once the link is known to be off
        load(qtbot, win, demo_line["profiles"] / "demo_washer")
        qtbot.waitUntil(lambda: win.review is not None and win.review.mode == "folder"
                        and win.review.current() is not None, timeout=60_000)
        key(qtbot, win, Qt.Key.Key_A)
        assert [r.kind for r in win.store.query()] == ["decision"]
        win.close()
    finally:
        blocker.close()


def test_a_bad_opcua_section_stops_the_station_naming_file_and_field(demo_line, tmp_path, monkeypatch,
                                                                     capsys, qapp) -> None:
    config = tmp_path / "settings.yaml"
    monkeypatch.setenv("INSPECTOR_CONFIG", str(config))
    base = (f"records_path: {tmp_path / 'records.sqlite'}\narchive_dir: {tmp_path / 'archive'}\n"
            f"profiles_dir: {demo_line['profiles']}\nstation_id: st-plc\n")
    for section, message in [
        ("{endpoint: 'opc.tcp://127.0.0.1:1/x/', recipes: [demo_washer, nope]}",
         r"outputs\.opcua\.recipes\[1\]: no profile 'nope' in .*profiles there: demo_fabric, demo_pcb, demo_washer\)"),
        ("{endpoint: 'http://127.0.0.1:1/x/', recipes: [demo_washer]}",
         r"outputs\.opcua\.endpoint: String should match"),
        ("{recipes: []}", r"outputs\.opcua\.recipes: list the profile names"),
        ("{recipes: [demo_washer], poll_s: 5}", r"outputs\.opcua\.poll_s: Input should be less than or equal to 1"),
    ]:
        config.write_text(base + f"outputs:\n  opcua: {section}\n")
        assert run_station() == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {config}: "), err
        assert re.search(message, err), err


def test_recipes_are_profile_names_or_folders(demo_line, tmp_path) -> None:
    profiles = demo_line["profiles"]
    out = resolve_recipes(OpcUaOutput(recipes=["demo_washer", str(profiles / "demo_fabric")]), profiles, "s.yaml")
    assert out == {"demo_washer": profiles / "demo_washer", "demo_fabric": profiles / "demo_fabric"}
    with pytest.raises(OutputConfigError, match=r"^s\.yaml: outputs\.opcua\.recipes\[1\]: profile 'demo_washer' is "
                                                r"listed twice"):
        resolve_recipes(OpcUaOutput(recipes=["demo_washer", "demo_washer"]), profiles, "s.yaml")
    with pytest.raises(OutputConfigError, match=r"recipes\[0\]: no profile .* \(profiles there: none\)"):
        resolve_recipes(OpcUaOutput(recipes=["demo_washer"]), tmp_path / "empty", "s.yaml")


def test_the_worker_answers_every_waiting_trigger(qtbot, station_env) -> None:
    """A Trigger waits on the worker's queue: it gets its result, or None when its task is dropped."""
    from inspector.sources import read_frame
    from inspector.ui.worker import StationWorker

    worker = StationWorker(hub=ModelHub(device="cpu", precision="fp32")).start()
    frame = read_frame(station_env["line"] / "000_good.png", "test", 0)
    got: dict[str, object] = {}

    def waiter(name: str):
        ev = threading.Event()

        def done(res: object) -> None:
            got[name] = res
            ev.set()

        return done, ev

    hold = threading.Event()
    worker.call(hold.wait)  # the worker is busy with something else
    done, first = waiter("dropped")
    worker.inspect_frame(frame, key=1, profile=station_env["profile"], done=done)
    worker.cancel_inspections()  # the operator stopped the source
    assert first.is_set() and got["dropped"] is None
    done, second = waiter("answered")
    worker.inspect_frame(frame, key=2, profile=station_env["profile"], done=done)
    hold.set()
    assert second.wait(60)
    res = got["answered"]
    assert res.key == 2 and res.error is None and res.inspection.profile_name == "plate"  # loaded on demand
    assert worker.current_profile().name == "plate"
    hold2 = threading.Event()
    worker.call(hold2.wait)
    done, third = waiter("closing")
    worker.inspect_frame(frame, key=3, done=done)
    threading.Timer(0.5, hold2.set).start()
    assert worker.stop(timeout_s=20)  # the station closes with the Trigger still queued
    assert third.is_set() and got["closing"] is None
    done, fourth = waiter("after")
    worker.inspect_frame(frame, key=4, done=done)
    assert fourth.is_set() and got["after"] is None
