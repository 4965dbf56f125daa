"""How records read on a terminal: the ``ran on`` line of ``show`` from stored hardware facts."""

from __future__ import annotations

from typing import Any

import pytest

from overnight.agent.gpus.hardware import hardware_info
from overnight.agent.gpus.inventory import DriverVersions, FakeInventory, GPUDevice
from overnight.commands.views import describe_hardware


def _machine(**fields: Any) -> dict[str, Any]:
    base = {"host": "box1", "cpu_model": "AMD EPYC 7763", "cpu_count": 64, "ram_gb": 503.7}
    return {**base, **fields}


def test_a_gpu_task_names_its_gpus_driver_cuda_cpu_and_ram() -> None:
    inventory = FakeInventory.with_gpus(4, name="NVIDIA H200")
    info = {**hardware_info(inventory, gpu_ids=("1", "3")), "host": "box1"}
    line = describe_hardware({**info, "cpu_model": "AMD EPYC 7763", "cpu_count": 64})
    assert line.startswith("box1; 2x NVIDIA H200 (GPU 1,3), driver fake-1.0, CUDA 12.4; ")
    assert "AMD EPYC 7763 (64 CPUs), " in line and line.endswith(" GB RAM")


def test_mixed_gpus_are_counted_by_the_model_name() -> None:
    devices = [
        GPUDevice(0, "u0", "NVIDIA A100", 40960, 0),
        GPUDevice(1, "u1", "NVIDIA A100", 40960, 0),
        GPUDevice(2, "u2", "Tesla T4", 15360, 0),
    ]
    inventory = FakeInventory(devices, versions=DriverVersions("550.54.15", None))
    line = describe_hardware({**hardware_info(inventory), "host": "box1"})
    assert line.startswith("box1; 2x NVIDIA A100, 1x Tesla T4 (GPU 0,1,2), driver 550.54.15; ")


def test_a_cpu_task_and_a_gpu_failure() -> None:
    assert describe_hardware(_machine(gpu_count=0)) == "box1; AMD EPYC 7763 (64 CPUs), 503.7 GB RAM"
    failed = describe_hardware(_machine(gpu_count=0, gpu_error="NVML failed to read: gone"))
    assert failed == (
        "box1; no GPU information (NVML failed to read: gone); AMD EPYC 7763 (64 CPUs), 503.7 GB RAM"
    )


@pytest.mark.parametrize(
    "info",
    [
        {},
        {"host": 3, "gpu_count": "two", "gpus": "0,1", "ram_gb": "lots"},
        {"gpu_count": 2, "gpus": [1, None, {"id": 0}], "gpu_model": None},
        {"gpu_count": 1, "gpus": [{"id": 0, "name": ["odd"]}], "cpu_count": -1},
    ],
)
def test_hand_edited_facts_never_crash_show(info: dict[str, Any]) -> None:
    assert describe_hardware(info)
