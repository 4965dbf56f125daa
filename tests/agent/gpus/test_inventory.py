from __future__ import annotations

import json
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import pynvml
import pytest

from overnight.agent.gpus.allocator import DEFAULT_FOREIGN_THRESHOLD_MB
from overnight.agent.gpus.inventory import (
    FakeInventory,
    GPUDevice,
    GPUProcess,
    NvmlInventory,
    open_inventory,
    parse_gpu_list,
)
from overnight.errors import GPUError, UsageError
from tests.fixtures.fakenvml import FakeDriver, FakeGPU, FakeProcess
from tests.fixtures.gpus import nvml_inventory

__all__ = ["nvml_inventory"]

MB = 1024 * 1024


class FakeNvml(ModuleType):
    """The slice of pynvml that NvmlInventory calls, over two GPUs, with a driver lacking v3."""

    def __init__(self, *, init_error: Exception | None = None) -> None:
        super().__init__("fake_pynvml")
        self.init_error = init_error
        self.shutdowns = 0
        self.compute = {0: [SimpleNamespace(pid=10, usedGpuMemory=2048 * MB)], 1: []}
        self.graphics = {
            0: [SimpleNamespace(pid=10, usedGpuMemory=2048 * MB)],
            1: [SimpleNamespace(pid=11, usedGpuMemory=None)],
        }

    def nvmlInit(self) -> None:
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index > 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(total=81559 * MB, used=(3000 if handle == 0 else 700) * MB)

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle:08d}"

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: int) -> list[Any]:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: int) -> list[Any]:
        return self.compute[handle]

    def nvmlDeviceGetGraphicsRunningProcesses_v2(self, handle: int) -> list[Any]:
        return self.graphics[handle]

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040


def test_nvml_init_failure_is_a_gpu_error_naming_the_fix() -> None:
    nvml = FakeNvml(init_error=pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    with pytest.raises(GPUError, match=r"NVIDIA driver.*--gpus none"):
        NvmlInventory(nvml=nvml)


def test_missing_nvml_bindings_are_a_gpu_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    with pytest.raises(GPUError, match=r"nvidia-ml-py.*--gpus none"):
        NvmlInventory()
    assert open_inventory().devices() == []


def test_nvml_inventory_reads_devices_processes_and_versions() -> None:
    nvml = FakeNvml()
    inv = NvmlInventory(nvml=nvml)
    devs = inv.devices()
    assert [d.id for d in devs] == ["0", "1"]
    assert devs[0].name == "NVIDIA H100 80GB HBM3"
    assert devs[0].uuid == "GPU-00000000"
    assert devs[0].memory_total_mb == 81559
    # pid 10 is listed as compute and graphics: one process, counted once
    assert devs[0].processes == (GPUProcess(10, 2048.0),)
    assert devs[1].processes == (GPUProcess(11, None),)
    # no v2 memory info: the used memory includes the driver's reserve, so only listed
    # processes can be told apart
    assert devs[0].memory_reserved_mb is None
    assert inv.foreign_memory_mb(0) == 2048.0
    assert inv.foreign_memory_mb(0, own_pids={10}) == 0.0
    # memory NVML cannot attribute is charged to the process it cannot measure
    assert inv.foreign_memory_mb(1) == 700.0
    assert inv.foreign_memory_mb(1, ours_on_it=True) == 700.0
    usage = inv.usage(0)
    assert (usage.utilization_pct, usage.memory_used_mb) == (87.0, 3000.0)
    versions = inv.versions()
    assert (versions.driver, versions.cuda) == ("550.54.15", "12.4")
    inv.close()
    assert nvml.shutdowns == 1


def test_nvml_errors_after_init_become_gpu_errors() -> None:
    inv = NvmlInventory(nvml=FakeNvml())
    with pytest.raises(GPUError, match="GPU 5"):
        inv.usage(5)


def test_foreign_memory_skips_own_pids() -> None:
    # 500 MB that no listed process accounts for: another container's, NVML cannot say whose
    dev = GPUDevice(0, "u", "n", 1000.0, 900.0, (GPUProcess(1, 100.0), GPUProcess(2, 300.0)))
    assert dev.foreign_memory_mb() == 900.0
    assert dev.foreign_memory_mb({1}) == 800.0
    assert dev.foreign_memory_mb({1, 2}) == 500.0
    assert dev.foreign_processes({2}) == (GPUProcess(1, 100.0),)
    # where a task of ours runs, unlisted memory may be its own: only listed processes count
    assert dev.foreign_memory_mb(ours_on_it=True) == 400.0
    assert dev.foreign_memory_mb({1}, ours_on_it=True) == 300.0
    assert dev.foreign_memory_mb({1, 2}, ours_on_it=True) == 0.0
    # an own process NVML cannot measure: our share is unknown, so only listed ones count
    unmeasured = GPUDevice(0, "u", "n", 1000.0, 900.0, (GPUProcess(1, None), GPUProcess(2, 300.0)))
    assert unmeasured.foreign_memory_mb({1}) == 300.0


def test_fake_inventory_processes_and_failure() -> None:
    inv = FakeInventory.with_gpus(2)
    inv.set_processes(1, GPUProcess(42, 5000.0))
    assert inv.device(1).memory_used_mb == 5000.0
    assert inv.foreign_memory_mb(1) == 5000.0
    assert inv.foreign_memory_mb(1, {42}) == 0.0
    inv.fail = "driver went away"
    with pytest.raises(GPUError, match="went away"):
        inv.devices()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", ("0", "1", "2", "3")),
        ("ALL", ("0", "1", "2", "3")),
        ("none", ()),
        ("", ()),
        ("0,1", ("0", "1")),
        ("0-3", ("0", "1", "2", "3")),
        ("3,0-1", ("3", "0", "1")),
        ("1, 1", ("1",)),
    ],
)
def test_parse_gpu_list(spec: str, expected: tuple[str, ...]) -> None:
    assert parse_gpu_list(spec, FakeInventory.with_gpus(4)) == expected


@pytest.mark.parametrize("spec", ["two", "0-", "-1", "3-1", "0;1", "1.5", "0,,1"])
def test_parse_gpu_list_rejects_bad_syntax_with_the_accepted_forms(spec: str) -> None:
    with pytest.raises(UsageError, match="use all, none, a list like 0,1 or a range like 0-3"):
        parse_gpu_list(spec, FakeInventory.with_gpus(4))


def test_parse_gpu_list_unknown_index_names_what_exists() -> None:
    with pytest.raises(UsageError, match="GPU 4 is not present; this machine has GPUs: 0, 1"):
        parse_gpu_list("0,4", FakeInventory.with_gpus(2))


def test_without_a_driver_all_is_a_cpu_agent_and_an_index_says_why() -> None:
    inv = FakeInventory(unavailable_reason="cannot talk to the NVIDIA driver")
    assert parse_gpu_list("all", inv) == ()
    with pytest.raises(UsageError, match=r"has GPUs: none \(cannot talk to the NVIDIA driver"):
        parse_gpu_list("0", inv)


def test_inventory_failing_during_parse() -> None:
    inv = FakeInventory.with_gpus(2)
    inv.fail = "NVML failed"
    assert parse_gpu_list("all", inv) == ()
    with pytest.raises(UsageError, match="NVML failed"):
        parse_gpu_list("0", inv)


def test_open_inventory_never_raises() -> None:
    inv = open_inventory()
    try:
        if isinstance(inv, FakeInventory):
            assert inv.devices() == []
            assert inv.unavailable_reason
        else:
            assert inv.unavailable_reason is None
    finally:
        inv.close()


@pytest.mark.gpu
def test_real_nvml_inventory(nvml_inventory: NvmlInventory) -> None:
    inv = nvml_inventory
    devs = inv.devices()
    for dev in devs:
        assert dev.uuid.startswith(("GPU-", "MIG-"))
        assert dev.name
        assert 0 <= dev.memory_used_mb <= dev.memory_total_mb
        usage = inv.usage(dev.index)
        assert 0 <= usage.utilization_pct <= 100
        own = {p.pid for p in dev.processes}
        assert inv.foreign_memory_mb(dev.index, own, ours_on_it=True) == 0.0
        # what a GPU with none but our processes holds besides them (the driver's reserve)
        # must stay under the hold-back threshold, or an idle GPU would never be handed out
        assert inv.foreign_memory_mb(dev.index, own) < DEFAULT_FOREIGN_THRESHOLD_MB
    versions = inv.versions()
    assert versions.driver
    assert versions.cuda is not None and versions.cuda[0].isdigit()
    assert parse_gpu_list("all", inv) == tuple(d.id for d in devs)


# -- the real pynvml bindings over the fake driver (tests/fixtures/fake_nvml.c) ----------------

NOT_FOUND = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND

DUMP = """
import dataclasses, json
from overnight.agent.gpus.inventory import NvmlInventory, open_inventory, GPUError
inv = open_inventory()
out = {"reason": inv.unavailable_reason}
try:
    out["devices"] = [dataclasses.asdict(d) for d in inv.devices()]
    out["usage"] = [dataclasses.asdict(inv.usage(d.index)) for d in inv.devices()]
    out["versions"] = dataclasses.asdict(inv.versions())
    out["foreign"] = [inv.foreign_memory_mb(d.index, {100}) for d in inv.devices()]
except GPUError as exc:
    out["error"] = str(exc)
inv.close()
print(json.dumps(out))
"""


def _dump(driver: FakeDriver) -> dict[str, Any]:
    return dict(json.loads(driver.python(DUMP).stdout))


def test_pynvml_reads_devices_processes_usage_and_versions(fake_driver: FakeDriver) -> None:
    fake_driver.set(
        [FakeGPU(used_mb=2348, util_pct=40), FakeGPU("NVIDIA A100-SXM4-80GB", 81920, 700, 5)],
        [
            FakeProcess(0, 100, 2048, "both"),  # listed as compute and graphics: counted once
            FakeProcess(0, 300, 300, "graphics"),
            FakeProcess(1, 200, None),  # memory NVML cannot tell
        ],
    )
    got = _dump(fake_driver)
    assert got["reason"] is None and "error" not in got, got
    first, second = got["devices"]
    assert (first["index"], first["name"], first["memory_total_mb"]) == (0, "NVIDIA H200", 143771)
    assert first["uuid"].startswith("GPU-") and first["uuid"] != second["uuid"]
    assert sorted((p["pid"], p["memory_mb"]) for p in first["processes"]) == [
        (100, 2048.0),
        (300, 300.0),
    ]
    assert second["name"] == "NVIDIA A100-SXM4-80GB"
    assert second["processes"] == [{"pid": 200, "memory_mb": None}]
    assert got["usage"] == [
        {"utilization_pct": 40.0, "memory_used_mb": 2348.0},
        {"utilization_pct": 5.0, "memory_used_mb": 700.0},
    ]
    assert got["versions"] == {"driver": "550.54.15", "cuda": "12.4"}
    # pid 100 is ours; the unmeasurable foreign process is charged what no process accounts for
    assert got["foreign"] == [300.0, 700.0]


def test_the_drivers_reserve_is_never_taken_for_foreign_use(fake_driver: FakeDriver) -> None:
    # An idle B200 reports about 1 GB used in v1 memory info: its driver's reserve, nobody's job.
    idle = FakeGPU("NVIDIA B200", 183359, used_mb=0, reserved_mb=1100)
    hidden = FakeGPU("NVIDIA B200", 183359, used_mb=30000, reserved_mb=1100)  # unlisted job
    fake_driver.set([idle, hidden])
    got = _dump(fake_driver)
    assert [d["memory_reserved_mb"] for d in got["devices"]] == [1100.0, 1100.0]
    assert [u["memory_used_mb"] for u in got["usage"]] == [0.0, 30000.0]
    assert got["foreign"] == [0.0, 30000.0]
    # a driver without v2 memory info: v1 used holds the reserve, only listed processes count
    fake_driver.set([idle, hidden], fail={"nvmlDeviceGetMemoryInfo_v2": NOT_FOUND})
    old = _dump(fake_driver)
    assert [d["memory_reserved_mb"] for d in old["devices"]] == [None, None]
    assert [d["memory_used_mb"] for d in old["devices"]] == [1100.0, 31100.0]
    assert old["foreign"] == [0.0, 0.0]


def test_a_driver_without_the_v3_process_calls_falls_back(fake_driver: FakeDriver) -> None:
    not_found = NOT_FOUND
    fake_driver.set(
        [FakeGPU(used_mb=1024)],
        [FakeProcess(0, 400, 1024)],
        fail={
            "nvmlDeviceGetComputeRunningProcesses_v3": not_found,
            "nvmlDeviceGetGraphicsRunningProcesses_v3": not_found,
        },
    )
    got = _dump(fake_driver)
    assert got["devices"][0]["processes"] == [{"pid": 400, "memory_mb": 1024.0}], got


def test_driver_errors_become_one_line_gpu_errors(fake_driver: FakeDriver) -> None:
    fake_driver.set(
        [FakeGPU()], fail={"nvmlDeviceGetUtilizationRates": pynvml.NVML_ERROR_GPU_IS_LOST}
    )
    assert _dump(fake_driver)["error"] == "NVML failed to read utilisation of GPU 0: GPU is lost"
    fake_driver.set([FakeGPU()], fail={"nvmlSystemGetCudaDriverVersion": pynvml.NVML_ERROR_UNKNOWN})
    assert _dump(fake_driver)["versions"] == {"driver": "550.54.15", "cuda": None}


def test_a_driver_that_does_not_start_is_a_cpu_agent_saying_why(fake_driver: FakeDriver) -> None:
    fake_driver.set([FakeGPU()], fail={"nvmlInitWithFlags": pynvml.NVML_ERROR_DRIVER_NOT_LOADED})
    got = _dump(fake_driver)
    assert got["devices"] == []
    assert got["reason"] == (
        "cannot talk to the NVIDIA driver (NVML: Driver Not Loaded); install the driver, "
        "or run the agent with --gpus none for a CPU-only agent"
    )
