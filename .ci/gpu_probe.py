"""What overnight sees of a real NVIDIA GPU, for `.ci/gpu-check` on a machine that has one.

Prints the inventory (devices, processes, driver and CUDA versions) and the task hardware facts,
then starts a GPU load (PyTorch, when present) as a task would and checks, against the driver:

- the monitor reads its utilisation and memory (peak above the idle reading);
- NVML lists its process, so the allocator holds the GPU back while that process is foreign
  and hands it out once the pid is the agent's own.

Exits non-zero, naming the check, when one does not hold. Needs no Redis.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

from overnight.agent.gpus.allocator import Allocator
from overnight.agent.gpus.hardware import hardware_info
from overnight.agent.gpus.inventory import NvmlInventory
from overnight.agent.run.monitor import GPUProbe, GPUSampler, Monitor, ProcessTreeSampler, tree_pids

LOAD = """
import sys, time, torch
x = torch.randn(8192, 8192, device="cuda")
hold = torch.empty(4 * 1024**3, dtype=torch.uint8, device="cuda")  # 4 GiB, well over 1024 MB
print("loaded", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    y = x @ x
torch.cuda.synchronize()
"""


def main() -> int:
    failures: list[str] = []
    inventory = NvmlInventory()
    devices = inventory.devices()
    print("devices:", json.dumps([d.__dict__ | {"processes": len(d.processes)} for d in devices]))
    print("versions:", inventory.versions())
    print("hardware:", json.dumps(hardware_info(inventory, gpu_ids=("0",))))
    if not devices:
        print("FAIL: NVML reports no GPU")
        return 1
    idle = inventory.usage(0)
    print("idle usage of GPU 0:", idle)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("no PyTorch here: the load checks are skipped")
        return 1 if failures else 0

    load = subprocess.Popen([sys.executable, "-c", LOAD, "12"], stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None
    print("load:", load.stdout.readline().strip(), "pid", load.pid)
    monitor = Monitor(
        [ProcessTreeSampler(load.pid), GPUSampler(GPUProbe(inventory, warn=print), ("0",))],
        interval=0.5,
    ).start()
    time.sleep(4)
    seen = inventory.device(0)
    print("processes on GPU 0:", seen.processes)
    listed = {p.pid for p in seen.processes}
    if load.pid not in listed:
        failures.append(f"NVML does not list the load's pid {load.pid} (it lists {sorted(listed)})")
    foreign = Allocator(("0",), inventory=inventory, foreign_threshold_mb=1024.0).unavailable()
    print("held back while foreign:", foreign)
    ours = Allocator(
        ("0",), inventory=inventory, foreign_threshold_mb=1024.0,
        own_pids=lambda: tree_pids(load.pid),
    ).unavailable()  # fmt: skip
    print("held back once it is ours:", ours)
    if "0" not in foreign:
        failures.append("a foreign process holding 4 GiB did not hold GPU 0 back")
    if "0" in ours:
        failures.append("GPU 0 was held back although its only process is the agent's own")
    load.wait(60)
    monitor.stop()
    summary = monitor.summary()
    print("monitor summary:", json.dumps(summary))
    util = summary.get("gpu0.util_pct", {}).get("peak", 0.0)
    mem = summary.get("gpu0.mem_mb", {}).get("peak", 0.0)
    if util <= 0:
        failures.append("the monitor read no GPU utilisation during a matrix-product loop")
    if mem < idle.memory_used_mb + 4096:
        failures.append(f"the monitor's GPU memory peak {mem} MB is not 4 GiB over idle")
    for failure in failures:
        print("FAIL:", failure)
    print("gpu probe:", "FAILED" if failures else "all checks held")
    return 1 if failures else 0


if __name__ == "__main__":
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "-L"], check=False)
    sys.exit(main())
