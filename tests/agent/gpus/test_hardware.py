from __future__ import annotations

import json
import socket
from pathlib import Path

import psutil
import pytest

from overnight.agent.gpus.hardware import cpu_model, gpu_model, hardware_info
from overnight.agent.gpus.inventory import DriverVersions, FakeInventory, GPUDevice, NvmlInventory
from tests.fixtures.gpus import nvml_inventory

__all__ = ["nvml_inventory"]


def test_hardware_of_the_whole_machine() -> None:
    inv = FakeInventory.with_gpus(2, name="NVIDIA A100-SXM4-80GB", memory_mb=81920)
    info = hardware_info(inv)
    assert json.loads(json.dumps(info)) == info
    assert info["host"] == socket.gethostname()
    assert info["gpu_model"] == "NVIDIA A100-SXM4-80GB"
    assert info["gpu_count"] == 2
    assert info["gpus"][1] == {
        "id": "1",
        "name": "NVIDIA A100-SXM4-80GB",
        "uuid": "GPU-fake-1",
        "memory_mb": 81920,
    }
    assert (info["driver_version"], info["cuda_version"]) == ("fake-1.0", "12.4")
    assert info["ram_gb"] == round(psutil.virtual_memory().total / 1024**3, 1)
    assert info["cpu_count"] >= 1
    assert info["cpu_model"]
    assert "gpu_error" not in info


def test_hardware_of_a_task_covers_only_its_gpus() -> None:
    inv = FakeInventory(
        [
            GPUDevice(0, "a", "NVIDIA A100", 40960, 0),
            GPUDevice(1, "b", "NVIDIA A100", 40960, 0),
            GPUDevice(2, "c", "Tesla T4", 15360, 0),
        ],
        versions=DriverVersions("535.1", "12.2"),
    )
    assert hardware_info(inv, ["2"])["gpu_model"] == "Tesla T4"
    both = hardware_info(inv, ["0", "2"])
    assert both["gpu_count"] == 2
    assert both["gpu_model"] == "1x NVIDIA A100, 1x Tesla T4"
    cpu_task = hardware_info(inv, [])
    assert cpu_task["gpu_count"] == 0
    assert cpu_task["driver_version"] is None


def test_gpu_failure_is_reported_not_raised() -> None:
    inv = FakeInventory.with_gpus(1)
    inv.fail = "NVML_ERROR_UNKNOWN"
    info = hardware_info(inv)
    assert info["gpu_error"] == "NVML_ERROR_UNKNOWN"
    assert info["gpu_count"] == 0
    absent = hardware_info(FakeInventory(unavailable_reason="no driver"))
    assert absent["gpu_error"] == "no driver"


def test_cpu_model_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 7763"
    assert cpu_model(tmp_path / "missing")  # falls back to the architecture


def test_gpu_model_names() -> None:
    assert gpu_model(["X", "X"]) == "X"
    assert gpu_model(["X", "Y", "X"]) == "2x X, 1x Y"


@pytest.mark.gpu
def test_real_hardware_info(nvml_inventory: NvmlInventory) -> None:
    info = hardware_info(nvml_inventory)
    assert info["gpu_count"] >= 1
    assert info["driver_version"]
    assert info["cuda_version"]
    assert "gpu_error" not in info
    print(json.dumps(info, indent=2))
