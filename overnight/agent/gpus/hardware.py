"""What a task ran on: host, GPUs, driver and CUDA versions, CPU and RAM, as a JSON-ready dict.

The daemon stores ``hardware_info(inventory, gpu_ids=task_gpus)`` on the task record
(``extra["hardware"]``) and ``hardware_info(inventory)`` (the whole machine) in its registry entry.
GPU facts that cannot be read (no driver, NVML error) leave the GPU fields empty and say why in
``gpu_error``; this never raises.
"""

from __future__ import annotations

import os
import platform
import socket
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from overnight.agent.gpus.inventory import GPUInventory
from overnight.errors import GPUError

_GB = 1024**3


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's marketing name ("AMD EPYC 7763 64-Core Processor"), or the architecture."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("model name", "hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_model(names: Sequence[str]) -> str:
    """One name for a set of GPUs: ``"NVIDIA A100"``, or ``"2x NVIDIA A100, 1x Tesla T4"``."""
    counts = Counter(names)
    if len(counts) == 1:
        return names[0]
    return ", ".join(f"{n}x {name}" for name, n in counts.items())


def hardware_info(inventory: GPUInventory, gpu_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Host facts, with the GPU fields about ``gpu_ids`` (all GPUs when None)."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "ram_gb": round(psutil.virtual_memory().total / _GB, 1),
        "gpu_model": None,
        "gpu_count": 0,
        "gpus": [],
        "driver_version": None,
        "cuda_version": None,
    }
    if gpu_ids is not None and not gpu_ids:
        return info
    try:
        devices = inventory.devices()
        if gpu_ids is not None:
            wanted = set(gpu_ids)
            devices = [d for d in devices if d.id in wanted]
        versions = inventory.versions() if devices else None
    except GPUError as exc:
        info["gpu_error"] = str(exc)
        return info
    if inventory.unavailable_reason:
        info["gpu_error"] = inventory.unavailable_reason
    if devices:
        info["gpu_model"] = gpu_model([d.name for d in devices])
        info["gpu_count"] = len(devices)
        info["gpus"] = [
            {"id": d.id, "name": d.name, "uuid": d.uuid, "memory_mb": round(d.memory_total_mb)}
            for d in devices
        ]
    if versions is not None:
        info["driver_version"] = versions.driver
        info["cuda_version"] = versions.cuda
    return info
