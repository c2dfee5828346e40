"""OPC UA handshake: a real asyncua client drives Trigger/Ack against the station's asyncua server,
which grabs frames from a real folder source and runs the real weight-free Inspector on the demo line."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

asyncua = pytest.importorskip("asyncua", reason="asyncua missing: install the 'plant' extra")

from asyncua import Client, ua  # noqa: E402

from inspector import demo  # noqa: E402
from inspector.inspection import Inspector  # noqa: E402
from inspector.imaging import read_image  # noqa: E402
from inspector.models.hub import ModelHub  # noqa: E402
from inspector.outputs import OutputConfigError, OutputsConfig, build_opcua  # noqa: E402
from inspector.outputs.opcua import OpcUaStation  # noqa: E402
from inspector.outputs.trigger import FrameGrabber, InspectOnTrigger  # noqa: E402
from inspector.profile import load_profile  # noqa: E402
from inspector.sources import FolderSource  # noqa: E402
from tests.support.servers import free_port  # noqa: E402
from tests.support.opcua_plc import station_nodes  # noqa: E402
from tests.support.opcua_plc import until as wait_for  # noqa: E402


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("opcua")
    line = demo.generate_demo_line(root / "line", seed=0, categories=["washer"], n_train=demo.REFERENCE_SHOTS,
                                   n_test_good=2, n_per_defect=1)
    demo.write_demo_profiles(root / "profiles", line)
    return line, root / "profiles"


async def _handshake(url: str, parts: list[int]) -> tuple[list[tuple[str, float, str, str]], list[float]]:
    """The PLC side: per part write RecipeIndex, Trigger=1; wait Busy falls; read; Ack=1; wait Ready."""
    answers, latencies = [], []
    async with Client(url) as client:
        n = await station_nodes(client)

        async def until(name: str, value: object) -> None:
            await wait_for(n, name, value, 30.0)

        for recipe in parts:
            await until("Ready", True)
            await n["RecipeIndex"].write_value(ua.Variant(recipe, ua.VariantType.Int32))
            t0 = time.perf_counter()
            await n["Trigger"].write_value(ua.Variant(True, ua.VariantType.Boolean))
            await until("Ready", False)
            await until("Busy", False)
            latencies.append(time.perf_counter() - t0)
            assert await n["Ready"].read_value() is False  # result valid: Busy fell while Ready is still 0
            answers.append((await n["Result"].read_value(), await n["Score"].read_value(),
                            await n["Recipe"].read_value(), await n["Error"].read_value()))
            await n["Ack"].write_value(ua.Variant(True, ua.VariantType.Boolean))
            await until("Ready", True)
            assert await n["Trigger"].read_value() is False and await n["Ack"].read_value() is False
        answers.append(("count", float(await n["PartCount"].read_value()), "", ""))
    return answers, latencies


def test_trigger_grabs_inspects_and_answers(line: tuple[Path, Path]) -> None:
    line_root, profiles = line
    hub = ModelHub(device="cpu", precision="fp32")
    washer = Inspector(load_profile(profiles / "demo_washer"), hub)
    fabric = Inspector(load_profile(profiles / "demo_fabric"), hub)
    camera = line_root.parent / "camera"  # what the camera will deliver: two good washers and one defective
    if not camera.is_dir():
        camera.mkdir()
        defect = sorted(p for p in (line_root / "washer" / "test").iterdir() if p.name != "good")[0]
        for i, img in enumerate([*sorted((line_root / "washer" / "test" / "good").glob("*.png")),
                                 defect / "000.png"]):
            shutil.copyfile(img, camera / f"{i:03d}.png")
    source = FolderSource(camera)
    n_frames = len(source)
    recorded: list[tuple[str, str]] = []
    handler = InspectOnTrigger(FrameGrabber(source), {"demo_washer": washer, "demo_fabric": fabric},
                               on_inspection=lambda recipe, frame, ins: recorded.append((recipe, str(frame.path))))
    url = f"opc.tcp://127.0.0.1:{free_port()}/inspector/"
    server = build_opcua(OutputsConfig.parse({"opcua": {"endpoint": url, "recipes": ["demo_fabric", "demo_washer"]}}),
                         handler)
    assert isinstance(server, OpcUaStation)
    server.start()
    try:
        plan = [1] * n_frames + [5, 1]  # every washer frame, then an unknown recipe, then an empty camera
        answers, latencies = asyncio.run(_handshake(url, plan))
    finally:
        server.stop()
    # the expected answers, computed independently: the same Inspector on the same files, in source order
    expected = []
    for _, path in recorded:
        ins = washer.inspect(read_image(path), path)
        expected.append(("OK" if ins.verdict == "PASS" else "NG", pytest.approx(ins.image_score, rel=1e-5)))
    assert len(recorded) == n_frames
    assert [(a[0], a[1]) for a in answers[:n_frames]] == expected
    assert {a[0] for a in answers[:n_frames]} == {"OK", "NG"}  # the line has good and defective washers
    assert all(a[2] == "demo_washer" and a[3] == "" for a in answers[:n_frames])
    assert answers[n_frames][0] == "NO-READ" and "recipe index 5 is not configured" in answers[n_frames][3]
    assert answers[n_frames + 1][:1] == ("NO-READ",) and "no frame" in answers[n_frames + 1][3]
    assert answers[-1] == ("count", float(n_frames + 2), "", "")
    assert max(latencies) < 10.0


def test_opcua_config_needs_recipes() -> None:
    assert build_opcua(OutputsConfig.parse({}), lambda i, r: None) is None
    with pytest.raises(OutputConfigError, match=r"outputs\.opcua\.recipes: list the profile names"):
        build_opcua(OutputsConfig.parse({"opcua": {}}), lambda i, r: None)
