"""The GPUs an agent can see: a small inventory interface, its NVML implementation and a fake.

The daemon opens one inventory per agent (:func:`open_inventory`) and hands it to the
:class:`~overnight.agent.gpus.allocator.Allocator` (which GPUs are free of foreign use), the
:class:`~overnight.agent.run.monitor.Monitor` (utilisation and memory while a task runs) and
:func:`~overnight.agent.gpus.hardware.hardware_info`. GPU ids are NVML indices as strings (``"0"``);
NVML numbers GPUs by PCI bus id, so a task run on the host needs ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
beside ``CUDA_VISIBLE_DEVICES`` for CUDA to agree (in a container given ``device_ids`` the GPUs are
renumbered from 0 instead).

Tests use :class:`FakeInventory`, whose devices, utilisation and processes are plain settable data.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
from collections.abc import Collection, Iterable
from types import ModuleType
from typing import Any

from overnight.errors import GPUError, UsageError

_MB = 1024 * 1024
GPU_LIST_FORMS = "all, none, a list like 0,1 or a range like 0-3"


@dataclasses.dataclass(frozen=True)
class GPUProcess:
    """A process holding memory on a GPU; ``memory_mb`` is None where NVML cannot tell."""

    pid: int
    memory_mb: float | None = None


@dataclasses.dataclass(frozen=True)
class GPUDevice:
    """One GPU as the inventory saw it at one moment."""

    index: int
    uuid: str
    name: str
    memory_total_mb: float
    memory_used_mb: float
    processes: tuple[GPUProcess, ...] = ()
    # What the driver sets aside, apart from ``memory_used_mb`` (NVML's v2 memory info); None
    # where the driver gives only v1, whose used memory includes it (up to ~1 GB on big GPUs).
    memory_reserved_mb: float | None = 0.0

    @property
    def id(self) -> str:
        """The id overnight uses for this GPU (its NVML index as a string)."""
        return str(self.index)

    def foreign_processes(self, own_pids: Collection[int]) -> tuple[GPUProcess, ...]:
        """Processes on this GPU whose pid is not one overnight started."""
        return tuple(p for p in self.processes if p.pid not in own_pids)

    def foreign_memory_mb(
        self, own_pids: Collection[int] = (), *, ours_on_it: bool = False
    ) -> float:
        """Memory held by processes overnight did not start.

        On a GPU no task of overnight's uses, that is all its used memory (the driver's reserve
        apart) but what listed own processes hold, so processes NVML does not list (another
        container's, without a shared pid namespace) count too. Where one of overnight's tasks
        runs (``ours_on_it``), where an own process's memory cannot be read, or where the driver
        cannot tell its reserve apart (v1 only), only what NVML attributes can be told apart:
        the listed foreign processes and, for those it cannot measure, the memory no listed
        process accounts for. Either way a foreign process is never counted as zero.
        """
        foreign = self.foreign_processes(own_pids)
        known = sum(p.memory_mb for p in foreign if p.memory_mb is not None)
        own = [p.memory_mb for p in self.processes if p.pid in own_pids]
        if not ours_on_it and None not in own and self.memory_reserved_mb is not None:
            return max(known, self.memory_used_mb - sum(m for m in own if m is not None))
        if any(p.memory_mb is None for p in foreign):
            accounted = sum(p.memory_mb for p in self.processes if p.memory_mb is not None)
            known += max(0.0, self.memory_used_mb - accounted)
        return known


@dataclasses.dataclass(frozen=True)
class GPUUsage:
    """Utilisation (percent of the last sampling period) and memory in use on one GPU."""

    utilization_pct: float
    memory_used_mb: float


@dataclasses.dataclass(frozen=True)
class DriverVersions:
    """Driver and CUDA versions (``"550.54.15"``, ``"12.4"``); None where unknown."""

    driver: str | None = None
    cuda: str | None = None


class GPUInventory(abc.ABC):
    """What an agent needs to know about its GPUs. Every method raises :class:`GPUError`."""

    #: Why the inventory holds no GPUs although some may exist (NVML missing); None otherwise.
    unavailable_reason: str | None = None

    @abc.abstractmethod
    def devices(self) -> list[GPUDevice]:
        """All GPUs, ordered by index, with their current memory use and processes."""

    @abc.abstractmethod
    def usage(self, index: int) -> GPUUsage:
        """Current utilisation and memory of GPU ``index``."""

    @abc.abstractmethod
    def versions(self) -> DriverVersions:
        """Driver and CUDA versions."""

    def device(self, index: int) -> GPUDevice:
        for dev in self.devices():
            if dev.index == index:
                return dev
        raise GPUError(f"GPU {index} is not present on this machine")

    def foreign_memory_mb(
        self, index: int, own_pids: Collection[int] = (), *, ours_on_it: bool = False
    ) -> float:
        """Memory on GPU ``index`` held by processes not in ``own_pids``."""
        return self.device(index).foreign_memory_mb(own_pids, ours_on_it=ours_on_it)

    def close(self) -> None:
        """Release the library handle; the inventory is not used afterwards."""
        return None


class NvmlInventory(GPUInventory):
    """GPUs as NVML (pynvml) reports them. Construction fails with :class:`GPUError`."""

    def __init__(self, *, nvml: ModuleType | None = None) -> None:
        if nvml is None:
            try:
                import pynvml
            except ImportError as exc:
                raise GPUError(
                    f"cannot load NVML ({exc}); pip install nvidia-ml-py, "
                    "or run the agent with --gpus none for a CPU-only agent"
                ) from exc
            nvml = pynvml
        self._nvml = nvml
        self._lock = threading.Lock()  # NVML calls are made from monitor and daemon threads
        self._v2_memory: bool | None = None  # whether the driver answers v2 memory info
        try:
            nvml.nvmlInit()
        except Exception as exc:
            raise GPUError(
                f"cannot talk to the NVIDIA driver (NVML: {exc}); install the driver, "
                "or run the agent with --gpus none for a CPU-only agent"
            ) from exc

    def _call(self, what: str, fn: str, *args: Any) -> Any:
        try:
            with self._lock:
                return getattr(self._nvml, fn)(*args)
        except Exception as exc:
            raise GPUError(f"NVML failed to read {what}: {exc}") from exc

    def _handle(self, index: int) -> Any:
        return self._call(f"GPU {index}", "nvmlDeviceGetHandleByIndex", index)

    def _processes(self, index: int, handle: Any) -> tuple[GPUProcess, ...]:
        seen: dict[int, GPUProcess] = {}
        for kind in ("Compute", "Graphics"):
            for proc in self._versioned(f"{kind.lower()} processes on GPU {index}", kind, handle):
                used = getattr(proc, "usedGpuMemory", None)
                pid = int(proc.pid)
                mem = None if used is None else used / _MB
                # A process can be listed as both; its memory is one allocation, not two.
                earlier = seen.get(pid)
                if earlier is not None and earlier.memory_mb is not None:
                    mem = max(mem or 0.0, earlier.memory_mb)
                seen[pid] = GPUProcess(pid, mem)
        return tuple(seen.values())

    def _versioned(self, what: str, kind: str, handle: Any) -> list[Any]:
        # The unversioned call insists that pynvml and the driver match; older drivers lack v3.
        base = f"nvmlDeviceGet{kind}RunningProcesses"
        last: GPUError | None = None
        for name in (f"{base}_v3", f"{base}_v2", base):
            if not hasattr(self._nvml, name):
                continue
            try:
                return list(self._call(what, name, handle))
            except GPUError as exc:
                last = exc
        raise last or GPUError(f"NVML cannot list {what}")

    def _memory(self, index: int, handle: Any) -> tuple[float, float, float | None]:
        """Total, used and reserved MB; reserved is None where only v1 answers (used has it)."""
        what = f"memory of GPU {index}"
        version = getattr(self._nvml, "nvmlMemory_v2", None)
        if version is not None and self._v2_memory is not False:
            try:
                mem = self._call(what, "nvmlDeviceGetMemoryInfo", handle, version)
                self._v2_memory = True
                return mem.total / _MB, mem.used / _MB, mem.reserved / _MB
            except GPUError:
                if self._v2_memory:  # it answered before: this is a real failure
                    raise
                self._v2_memory = False  # a driver older than v2 memory info
        mem = self._call(what, "nvmlDeviceGetMemoryInfo", handle)
        return mem.total / _MB, mem.used / _MB, None

    def devices(self) -> list[GPUDevice]:
        count = int(self._call("the GPU count", "nvmlDeviceGetCount"))
        result = []
        for index in range(count):
            handle = self._handle(index)
            total, used, reserved = self._memory(index, handle)
            result.append(
                GPUDevice(
                    index=index,
                    uuid=_text(self._call(f"GPU {index} uuid", "nvmlDeviceGetUUID", handle)),
                    name=_text(self._call(f"GPU {index} name", "nvmlDeviceGetName", handle)),
                    memory_total_mb=total,
                    memory_used_mb=used,
                    processes=self._processes(index, handle),
                    memory_reserved_mb=reserved,
                )
            )
        return result

    def usage(self, index: int) -> GPUUsage:
        handle = self._handle(index)
        util = self._call(f"utilisation of GPU {index}", "nvmlDeviceGetUtilizationRates", handle)
        _, used, _ = self._memory(index, handle)
        return GPUUsage(utilization_pct=float(util.gpu), memory_used_mb=used)

    def versions(self) -> DriverVersions:
        driver = _text(self._call("the driver version", "nvmlSystemGetDriverVersion"))
        try:
            raw = int(self._call("the CUDA version", "nvmlSystemGetCudaDriverVersion"))
            cuda: str | None = f"{raw // 1000}.{raw % 1000 // 10}"
        except GPUError:
            cuda = None
        return DriverVersions(driver=driver, cuda=cuda)

    def close(self) -> None:
        try:
            with self._lock:
                self._nvml.nvmlShutdown()
        except Exception:  # shutting down a broken library has nothing left to report
            pass


class FakeInventory(GPUInventory):
    """An inventory whose GPUs tests set: ``FakeInventory.with_gpus(4)``, then edit fields.

    ``fail`` makes every call raise :class:`GPUError` (a driver that went away).
    """

    def __init__(
        self,
        devices: Iterable[GPUDevice] = (),
        *,
        versions: DriverVersions | None = None,
        unavailable_reason: str | None = None,
    ) -> None:
        self._devices = {d.index: d for d in devices}
        self.utilization: dict[int, float] = {i: 0.0 for i in self._devices}
        self._versions = versions or DriverVersions("fake-1.0", "12.4")
        self.unavailable_reason = unavailable_reason
        self.fail: str | None = None
        self.calls = 0

    @classmethod
    def with_gpus(
        cls, count: int, *, name: str = "Fake GPU", memory_mb: float = 16384.0
    ) -> FakeInventory:
        return cls(GPUDevice(i, f"GPU-fake-{i}", name, memory_mb, 0.0) for i in range(count))

    def _check(self) -> None:
        self.calls += 1
        if self.fail:
            raise GPUError(self.fail)

    def set_processes(self, index: int, *processes: GPUProcess) -> None:
        """Replace GPU ``index``'s processes; its used memory becomes their sum."""
        used = sum(p.memory_mb or 0.0 for p in processes)
        self._devices[index] = dataclasses.replace(
            self._devices[index], processes=tuple(processes), memory_used_mb=used
        )

    def set_usage(self, index: int, *, utilization_pct: float, memory_used_mb: float) -> None:
        self.utilization[index] = utilization_pct
        self._devices[index] = dataclasses.replace(
            self._devices[index], memory_used_mb=memory_used_mb
        )

    def devices(self) -> list[GPUDevice]:
        self._check()
        return [self._devices[i] for i in sorted(self._devices)]

    def usage(self, index: int) -> GPUUsage:
        self._check()
        dev = self.device(index)
        return GPUUsage(self.utilization.get(index, 0.0), dev.memory_used_mb)

    def versions(self) -> DriverVersions:
        self._check()
        return self._versions


def open_inventory() -> GPUInventory:
    """NVML's inventory, or an empty one that says why when the driver cannot be reached."""
    try:
        return NvmlInventory()
    except GPUError as exc:
        return FakeInventory(unavailable_reason=str(exc))


def parse_gpu_list(spec: str, inventory: GPUInventory) -> tuple[str, ...]:
    """The GPU ids named by ``--gpus``: ``all``, ``none``, ``0,1``, ``0-3`` or ``0,2-3``.

    ``all`` on a machine without a usable driver is no GPUs (a CPU agent); naming a GPU that
    is not present raises :class:`UsageError`.
    """
    text = spec.strip().lower()
    if text in ("", "none"):
        return ()
    try:
        present = [d.index for d in inventory.devices()]
    except GPUError as exc:
        if text == "all":
            return ()
        raise UsageError(f"--gpus {spec}: {exc}") from exc
    if text == "all":
        return tuple(str(i) for i in present)
    wanted: list[int] = []
    for part in text.split(","):
        wanted.extend(_parse_part(part.strip(), spec))
    missing = [i for i in wanted if i not in present]
    if missing:
        have = ", ".join(str(i) for i in present) or "none"
        why = f" ({inventory.unavailable_reason})" if inventory.unavailable_reason else ""
        raise UsageError(
            f"--gpus {spec}: GPU {missing[0]} is not present; this machine has GPUs: {have}{why}"
        )
    return tuple(str(i) for i in dict.fromkeys(wanted))


def _parse_part(part: str, spec: str) -> list[int]:
    bad = UsageError(f"--gpus {spec!r} is not understood; use {GPU_LIST_FORMS}")
    lo, sep, hi = part.partition("-")
    if not lo.isdigit() or (sep and not hi.isdigit()):
        raise bad
    if not sep:
        return [int(lo)]
    if int(hi) < int(lo):
        raise bad
    return list(range(int(lo), int(hi) + 1))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
