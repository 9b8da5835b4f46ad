"""A scripted stand-in for the `pynvml` module (nvidia-ml-py), for tests on machines without a driver.

Only the library boundary is faked: tests put a FakeNVML where harness.measure.telemetry looks up
`pynvml`, and the harness code runs unchanged. Each per-sample reading is a Script: a list of
values returned one per call, the last one repeated; a value of None makes that call raise
NVMLError_NotSupported, as real NVML does for a counter the GPU lacks. Units are NVML's:
bytes, milliwatts, millijoules, percent, MHz, degrees C, clock-event reason bit masks.
"""
from __future__ import annotations

import threading
from types import SimpleNamespace

GIB = 1 << 30


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    def __str__(self) -> str:
        return "Not Supported"


class NVMLError_InvalidArgument(NVMLError):
    def __str__(self) -> str:
        return "Invalid Argument"


class NVMLError_LibraryNotFound(NVMLError):
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


class Script:
    """Values handed out one per call, the last repeated; None raises NotSupported."""

    def __init__(self, values):
        self.values = list(values) if isinstance(values, (list, tuple)) else [values]
        self.returned: list = []
        self._lock = threading.Lock()

    def next(self):
        with self._lock:
            value = self.values[min(len(self.returned), len(self.values) - 1)]
            if value is None:
                raise NVMLError_NotSupported()
            self.returned.append(value)
            return value

    @property
    def consumed(self) -> bool:
        return len(self.returned) >= len(self.values)


class FakeGPU:
    """One device. Readings are Scripts; processes are lists of (pid, used bytes or None)."""

    def __init__(self, name="NVIDIA H100 80GB HBM3", uuid="GPU-0000", total=80 * GIB,
                 mem_used=(GIB // 2,), power_mw=(300_000,), energy_mj=(1_000_000,), util=(90,),
                 sm_clock=(1980,), temp=(60,), reasons=(0,), compute_procs=(), graphics_procs=(),
                 power_limit_mw=700_000, max_sm_clock=1980, max_mem_clock=2619, capability=(9, 0)):
        self.name, self.uuid, self.total = name, uuid, total
        self.mem_used, self.power_mw, self.energy_mj = Script(mem_used), Script(power_mw), Script(energy_mj)
        self.util, self.sm_clock, self.temp = Script(util), Script(sm_clock), Script(temp)
        self.reasons = Script(reasons)
        self.compute_procs, self.graphics_procs = list(compute_procs), list(graphics_procs)
        self.power_limit_mw, self.max_sm_clock, self.max_mem_clock = power_limit_mw, max_sm_clock, max_mem_clock
        self.capability = capability


def _procs(entries):
    return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in entries]


class FakeNVML:
    """The subset of pynvml that harness.measure.telemetry calls."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported

    def __init__(self, gpus=None, driver="550.54.15", cuda_driver=12040, init_error=None):
        self.gpus = list(gpus) if gpus is not None else [FakeGPU()]
        self.driver, self.cuda_driver, self.init_error = driver, cuda_driver, init_error
        self.init_calls = 0

    def nvmlInit(self):
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise NVMLError_InvalidArgument()

    def nvmlDeviceGetMemoryInfo(self, gpu):
        used = gpu.mem_used.next()
        return SimpleNamespace(total=gpu.total, used=used, free=gpu.total - used)

    def nvmlDeviceGetPowerUsage(self, gpu):
        return gpu.power_mw.next()

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu):
        return gpu.energy_mj.next()

    def nvmlDeviceGetUtilizationRates(self, gpu):
        return SimpleNamespace(gpu=gpu.util.next(), memory=0)

    def nvmlDeviceGetClockInfo(self, gpu, clock):
        if clock != self.NVML_CLOCK_SM:
            raise NVMLError_InvalidArgument()
        return gpu.sm_clock.next()

    def nvmlDeviceGetTemperature(self, gpu, sensor):
        return gpu.temp.next()

    def nvmlDeviceGetCurrentClocksEventReasons(self, gpu):
        return gpu.reasons.next()

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, gpu):  # the pre-12.535 name
        return gpu.reasons.next()

    def nvmlDeviceGetComputeRunningProcesses(self, gpu):
        return _procs(gpu.compute_procs)

    def nvmlDeviceGetGraphicsRunningProcesses(self, gpu):
        return _procs(gpu.graphics_procs)

    def nvmlDeviceGetName(self, gpu):
        return gpu.name

    def nvmlDeviceGetUUID(self, gpu):
        return gpu.uuid

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu):
        return gpu.power_limit_mw

    def nvmlDeviceGetMaxClockInfo(self, gpu, clock):
        return gpu.max_sm_clock if clock == self.NVML_CLOCK_SM else gpu.max_mem_clock

    def nvmlDeviceGetCudaComputeCapability(self, gpu):
        return gpu.capability

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self):
        return self.cuda_driver


class LegacyFakeNVML(FakeNVML):
    """nvidia-ml-py before 12.535: only the ...ClocksThrottleReasons name exists."""

    nvmlDeviceGetCurrentClocksEventReasons = None
