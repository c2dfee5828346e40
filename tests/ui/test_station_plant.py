"""The station wired to the plant: PostgreSQL keeper, outputs dispatcher, backlogs in the status bar."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from inspector.outputs import OutputsConfig, build_dispatcher
from inspector.records import SqliteRecordStore
from inspector.records_pg import PostgresRecordStore
from inspector.station import Session
from inspector.ui.app import build_keeper, build_outputs
from tests.support.servers import Postgres, free_port, pg_bindir, require
from tests.ui.station_support import (  # noqa: F401 - fixtures
    key,
    load,
    login,
    make_window,
    users,
    users_file,
    wait_current,
)


def test_composition_root_picks_the_keeper_and_the_outputs(station_settings, tmp_path) -> None:
    plain = build_keeper(station_settings)
    assert isinstance(plain.store, SqliteRecordStore) and build_outputs(station_settings) is None
    plain.store.close()
    plant = station_settings.model_copy(update={
        "records_url": "postgresql://inspector_station:pw@127.0.0.1:1/inspector",  # nothing listens: lazy connect
        "outputs": {"queue_dir": str(tmp_path / "q"), "webhook": {"url": "http://127.0.0.1:1/parts"}}})
    keeper = build_keeper(plant)
    assert isinstance(keeper.store, PostgresRecordStore)
    assert Path(keeper.journal.path) == Path(plant.records_path).parent / "postgres.journal"
    disp = build_outputs(plant)
    try:
        assert [lane.name for lane in disp.lanes] == ["webhook"]
    finally:
        disp.close()


def _start(qtbot, win, station_env) -> None:
    win.show()
    qtbot.waitExposed(win)
    login(qtbot, win)
    load(qtbot, win, station_env["profile"])
    win.start_source("folder", str(station_env["line"]))
    wait_current(qtbot, win, "000_good.png")
    key(qtbot, win, Qt.Key.Key_A)


def test_status_bar_shows_the_outputs_backlog(qtbot, station_settings, qsettings, users, station_env,
                                              tmp_path) -> None:
    port = free_port()  # nothing listens there: the webhook's queue grows
    cfg = OutputsConfig.parse({"queue_dir": str(tmp_path / "q"), "retry_initial_s": 0.05, "retry_max_s": 0.2,
                               "webhook": {"url": f"http://127.0.0.1:{port}/parts", "timeout_s": 1}})
    disp = build_dispatcher(cfg, station_settings.station_id)
    win = make_window(qtbot, station_settings, qsettings, users, dispatcher=disp)
    assert win.outputs_label.text() == "outputs ✔"  # configured, nothing waiting
    _start(qtbot, win, station_env)
    assert win.keeper.backlog == 0 and win.records_label.text() == "records ✔"
    assert disp.backlog() == {"webhook": 1}  # the decision was handed to the outputs

    def shown() -> None:
        assert "outputs: 1 waiting" in win.outputs_label.text()
        assert "Connection refused" in win.outputs_label.toolTip()

    qtbot.waitUntil(shown, timeout=8000)
    qtbot.wait(500)  # the folder's look-ahead has settled: nothing but the backlog timer refreshes the bar now
    disp.publish_record(win.session.records[0])  # a result queued from outside the window
    qtbot.waitUntil(lambda: "outputs: 2 waiting" in win.outputs_label.text(), timeout=6000)
    lane = disp.lanes[0]
    win.close()
    assert not lane._thread.is_alive(), "closing the window stops the outputs"
    assert len(lane.queue) >= 2  # still on disk for the next start (plus the rows written at close)


def test_status_bar_shows_the_records_backlog(qtbot, station_settings, qsettings, users, station_env,
                                              tmp_path) -> None:
    bad = tmp_path / "not_a_db"
    bad.mkdir()  # the records database cannot be opened: decisions wait in the journal
    settings = station_settings.model_copy(update={"records_path": bad, "records_journal": tmp_path / "j.journal"})
    win = make_window(qtbot, settings, qsettings, users)
    assert win.dispatcher is None
    _start(qtbot, win, station_env)
    assert win.keeper.backlog == 1 and "1 NOT SAVED" in win.records_label.text()
    assert "j.journal" in win.records_label.toolTip() and win.outputs_label.text() == ""  # no outputs configured
    win.close()


@require(pg_bindir() is not None, "PostgreSQL server (package 'postgresql')")
def test_decisions_reach_the_plant_postgresql_server(qtbot, station_settings, qsettings, users, station_env,
                                                      tmp_path) -> None:
    psycopg = pytest.importorskip("psycopg", reason="psycopg missing: install the 'plant' extra")
    from inspector.records_pg import init_schema

    pg = Postgres(tmp_path / "pg").init().start()
    try:
        name = "t_" + uuid.uuid4().hex[:10]
        with psycopg.connect(pg.url(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        res = init_schema(pg.url(dbname=name), station_password="st-pw", reader_password="qa-pw")
        settings = station_settings.model_copy(update={"records_url": res.station_url})
        keeper = build_keeper(settings)  # what run_station builds
        session = Session(keeper, settings.station_id, settings.archive_dir, settings.archive_images)
        win = make_window(qtbot, settings, qsettings, users, store=keeper.store, session=session)
        _start(qtbot, win, station_env)
        assert win.keeper.backlog == 0 and win.records_label.text() == "records ✔"
        decided = win.session.records[-1]
        win.close()
        qa = PostgresRecordStore(res.reader_url, read_only=True)  # what QA reads, through the record store
        try:
            rows = qa.query()
            assert [r.uid for r in rows if r.kind == "decision"] == [decided.uid]
            assert decided.operator_verdict == "PASS" and all(r.station_id == "st-test" for r in rows)
            assert qa.verify().ok
        finally:
            qa.close()
    finally:
        pg.remove()
