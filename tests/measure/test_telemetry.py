"""harness.measure.telemetry against a fake NVML at the library boundary, and the real one without a driver."""
from __future__ import annotations

import os
import statistics
import time

import pytest

from harness.measure import telemetry
from tests.fake_nvml import GIB, FakeGPU, FakeNVML, LegacyFakeNVML, NVMLError_LibraryNotFound

ME = os.getpid()


@pytest.fixture
def install(monkeypatch):
    """Put a fake pynvml where telemetry looks it up, with NVML not yet initialised."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def _install(fake):
        monkeypatch.setattr(telemetry, "pynvml", fake)
        monkeypatch.setattr(telemetry, "_init_state", {"pid": None, "error": None})
        return fake
    return _install


def run_until_consumed(sampler, *scripts, min_s=0.0, timeout_s=3.0):
    """Sample until every script has handed out all its values (and at least min_s passed)."""
    sampler.start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if all(s.consumed for s in scripts) and time.perf_counter() - t0 >= min_s:
            break
        time.sleep(0.01)
    return sampler.stop()


def test_peak_memory_is_above_the_baseline_read_at_start(install):
    gpu = FakeGPU(mem_used=[10 * GIB, 12 * GIB, 15 * GIB, 13 * GIB, 11 * GIB, 10 * GIB],
                  compute_procs=[(ME, 3 * GIB), (ME + 1, GIB)])
    install(FakeNVML([gpu]))
    result = run_until_consumed(telemetry.TelemetrySampler(), gpu.mem_used)
    assert result["nvml"] == "ok"
    assert result["mem_nvml_baseline_bytes"] == 10 * GIB
    assert result["mem_nvml_peak_bytes"] == 5 * GIB  # 15 GiB at the top of the rise, minus 10
    assert result["mem_process_gpu_bytes"] == 3 * GIB  # ours by pid, not the other process's


def test_memory_falling_below_baseline_gives_zero_peak_not_negative(install):
    gpu = FakeGPU(mem_used=[10 * GIB, 9 * GIB, 8 * GIB])
    install(FakeNVML([gpu]))
    result = run_until_consumed(telemetry.TelemetrySampler(), gpu.mem_used)
    assert result["mem_nvml_peak_bytes"] == 0
    assert result["mem_process_gpu_bytes"] is None  # our pid is not listed by NVML


def test_energy_is_the_counter_delta_in_joules(install):
    gpu = FakeGPU(energy_mj=[1_000_000, 1_150_000], power_mw=[250_000, 350_000])
    install(FakeNVML([gpu]))
    result = run_until_consumed(telemetry.TelemetrySampler(), gpu.power_mw, min_s=0.15)
    assert result["energy_j"] == pytest.approx(150.0)
    assert result["energy_source"] == "nvml_total_energy_counter"
    powers = [mw / 1000 for mw in gpu.power_mw.returned]
    assert result["power_w_mean"] == pytest.approx(statistics.fmean(powers))
    assert result["power_w_max"] == 350.0
    assert result["energy_j_power_x_time"] == pytest.approx(result["power_w_mean"] * result["window_s"])


def test_energy_without_the_counter_is_none_never_zero(install):
    gpu = FakeGPU(energy_mj=[None])  # NVMLError_NotSupported, as on GPUs without the counter
    install(FakeNVML([gpu]))
    result = run_until_consumed(telemetry.TelemetrySampler(), min_s=0.15)
    assert result["energy_j"] is None and result["energy_source"] is None
    assert result["power_w_mean"] == 300.0  # the rest of the telemetry is unaffected
    assert result["nvml"] == "ok"


def test_window_shorter_than_the_counter_period_gives_no_energy(install):
    install(FakeNVML([FakeGPU(energy_mj=[1_000_000, 1_000_500])]))
    result = telemetry.TelemetrySampler().start().stop()
    assert result["window_s"] < telemetry.MIN_ENERGY_WINDOW_S
    assert result["energy_j"] is None
    assert any("shorter than" in w for w in result["warnings"])


def test_counter_that_does_not_advance_gives_none(install):
    install(FakeNVML([FakeGPU(energy_mj=[5_000_000])]))
    result = run_until_consumed(telemetry.TelemetrySampler(), min_s=0.15)
    assert result["energy_j"] is None
    assert any("energy counter went from" in w for w in result["warnings"])


def test_energy_cross_check_against_mean_power_times_time(install, monkeypatch):
    monkeypatch.setattr(telemetry, "ENERGY_CROSSCHECK_MIN_S", 0.1)
    gpu = FakeGPU(energy_mj=[0, 600_000], power_mw=[300_000])  # 600 J in ~0.2 s at 300 W: wrong
    install(FakeNVML([gpu]))
    result = run_until_consumed(telemetry.TelemetrySampler(), min_s=0.2)
    assert result["energy_j"] == pytest.approx(600.0)
    assert any("disagree" in w for w in result["warnings"])

    window = 0.25
    plausible = FakeGPU(energy_mj=[0, int(300_000 * window)], power_mw=[300_000])
    install(FakeNVML([plausible]))
    result = run_until_consumed(telemetry.TelemetrySampler(), min_s=window)
    ratio = result["energy_j"] / result["energy_j_power_x_time"]
    assert 0.67 <= ratio <= 1.5 and not any("disagree" in w for w in result["warnings"])


def test_thermal_reason_in_one_sample_flags_the_window(install):
    gpu = FakeGPU(reasons=[0x1, 0x40, 0x0, 0x0])  # idle, then one HW thermal slowdown sample
    install(FakeNVML([gpu]))
    result = run_until_consumed(telemetry.TelemetrySampler(), gpu.reasons)
    assert result["throttled"] is True
    assert result["throttle_reasons"] == ["hw_thermal_slowdown"]
    assert result["clock_event_reasons"] == ["gpu_idle", "hw_thermal_slowdown"]


@pytest.mark.parametrize("mask, names", [(0x80, ["hw_power_brake_slowdown"]),
                                         (0x20, ["sw_thermal_slowdown"]), (0x8, ["hw_slowdown"])])
def test_power_brake_and_thermal_slowdowns_are_throttling(install, mask, names):
    gpu = FakeGPU(reasons=[0, mask, 0])
    install(FakeNVML([gpu]))
    result = run_until_consumed(telemetry.TelemetrySampler(), gpu.reasons)
    assert result["throttled"] is True and result["throttle_reasons"] == names
    assert result["power_capped"] is False


def test_the_software_power_cap_is_reported_apart_from_throttling(install):
    """A heavy kernel on an H100/H200 runs at its power limit: that is not a disturbed machine."""
    gpu = FakeGPU(reasons=[0, 0x4, 0x4, 0])
    install(FakeNVML([gpu]))
    result = run_until_consumed(telemetry.TelemetrySampler(), gpu.reasons)
    assert result["power_capped"] is True
    assert result["throttled"] is False and result["throttle_reasons"] == []
    assert result["clock_event_reasons"] == ["sw_power_cap"]


def test_idle_and_application_clock_reasons_are_not_throttling(install):
    gpu = FakeGPU(reasons=[0x1, 0x2, 0x10, 0x1])
    install(FakeNVML([gpu]))
    result = run_until_consumed(telemetry.TelemetrySampler(), gpu.reasons)
    assert result["throttled"] is False and result["throttle_reasons"] == []
    assert result["clock_event_reasons"] == ["gpu_idle", "applications_clocks_setting", "sync_boost"]


def test_older_nvml_binding_name_for_reasons_is_used(install):
    gpu = FakeGPU(reasons=[0x40])
    install(LegacyFakeNVML([gpu]))
    result = run_until_consumed(telemetry.TelemetrySampler(), gpu.reasons)
    assert result["throttled"] is True


def test_unsupported_metrics_are_none_and_the_rest_still_sampled(install):
    gpu = FakeGPU(reasons=[None], util=[None], temp=[55, 71, 64], sm_clock=[1980, 1410, 1755])
    install(FakeNVML([gpu]))
    result = run_until_consumed(telemetry.TelemetrySampler(), gpu.sm_clock, gpu.temp)
    assert result["throttled"] is None and result["throttle_reasons"] is None
    assert result["gpu_util_pct_mean"] is None
    assert result["temperature_c_max"] == 71.0
    assert (result["sm_clock_mhz_min"], result["sm_clock_mhz_max"]) == (1410.0, 1980.0)
    assert result["sm_clock_mhz_median"] == statistics.median(gpu.sm_clock.returned)
    assert gpu.util.returned == []  # a refused metric is not asked again every sample


def test_sampler_samples_until_stopped_at_10_hz_or_more(install):
    install(FakeNVML())
    sampler = telemetry.TelemetrySampler(interval_s=0.05).start()
    deadline = time.monotonic() + 60
    while sampler._n < 3 and time.monotonic() < deadline:  # waits on the samples, not a clock
        time.sleep(0.01)
    result = sampler.stop()
    assert result["n_samples"] >= 4  # three in the thread, the last one in stop()
    assert result["window_s"] >= 2 * sampler.interval_s  # the thread waits an interval between samples
    assert telemetry.TelemetrySampler(interval_s=5.0).interval_s == 0.1  # clamped to keep >= 10 Hz


def test_nvml_is_initialised_once_per_process(install):
    fake = install(FakeNVML())
    for _ in range(3):
        telemetry.TelemetrySampler().start().stop()
    telemetry.device_info(0)
    assert telemetry.nvml_available()
    assert fake.init_calls == 1


def test_device_info_from_nvml(install):
    install(FakeNVML([FakeGPU(name="NVIDIA H200", total=141 * GIB)], cuda_driver=12080))
    info = telemetry.device_info(0)
    assert info["name"] == "NVIDIA H200" and info["memory_total_bytes"] == 141 * GIB
    assert info["power_limit_w"] == 700.0 and info["sm_clock_max_mhz"] == 1980
    assert info["driver_version"] == "550.54.15" and info["cuda_driver_version"] == "12.8"


def test_cuda_visible_devices_maps_to_the_nvml_index(install, monkeypatch):
    install(FakeNVML([FakeGPU(name="first", uuid="GPU-aaa"), FakeGPU(name="second", uuid="GPU-bbb")]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert telemetry.device_info(0)["name"] == "second"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb,GPU-aaa")
    assert telemetry.device_info(1)["name"] == "first"
    assert telemetry.device_info(2) == {}
    result = telemetry.TelemetrySampler(device_index=2).start().stop()
    assert result["nvml"].startswith("not available: CUDA device 2 is not in CUDA_VISIBLE_DEVICES")


def test_other_process_on_the_gpu_gives_a_contention_warning(install):
    install(FakeNVML([FakeGPU(compute_procs=[(ME, GIB), (4242, 6 * GIB)], graphics_procs=[(777, None)])]))
    warning = telemetry.gpu_contention_warning(0)
    assert "2 other process(es)" in warning and "pid 4242 (6.0 GiB)" in warning and "pid 777 (?)" in warning


def test_unexplained_used_memory_gives_a_contention_warning(install):
    install(FakeNVML([FakeGPU(mem_used=[20 * GIB])]))  # no process visible (another container)
    assert "20.0 GiB in use" in telemetry.gpu_contention_warning(0)


def test_idle_gpu_or_only_our_process_gives_no_warning(install):
    install(FakeNVML([FakeGPU(mem_used=[GIB // 2])]))
    assert telemetry.gpu_contention_warning(0) is None
    install(FakeNVML([FakeGPU(mem_used=[9 * GIB], compute_procs=[(ME, 8 * GIB + GIB // 2)])]))
    assert telemetry.gpu_contention_warning(0) is None


def test_the_idle_threshold_scales_with_the_card(install):
    """An H200 (141 GB) idles with more in use than a 16 GB card: 2% of it, not a fixed 1 GiB."""
    install(FakeNVML([FakeGPU(total=141 * GIB, mem_used=[2 * GIB])]))
    assert telemetry.gpu_contention_warning(0) is None  # under 2% of 141 GiB
    install(FakeNVML([FakeGPU(total=16 * GIB, mem_used=[2 * GIB])]))
    assert "2.0 GiB in use" in telemetry.gpu_contention_warning(0)  # over max(1 GiB, 2%)


def test_failed_init_reports_the_reason(install):
    install(FakeNVML(init_error=NVMLError_LibraryNotFound()))
    with telemetry.TelemetrySampler() as sampler:
        pass
    assert sampler.result["nvml"] == "not available: NVML Shared Library Not Found"
    assert telemetry.nvml_available() is False


def test_missing_binding_reports_not_installed(install):
    install(None)
    assert telemetry.TelemetrySampler().start().stop()["nvml"] == "not available: nvidia-ml-py is not installed"


def test_stop_without_start_and_twice(install):
    install(FakeNVML())
    assert telemetry.TelemetrySampler().stop()["nvml"] == "not available: sampler was not started"
    sampler = telemetry.TelemetrySampler().start()
    assert sampler.stop() is sampler.stop()


def test_decode_names_unknown_bits():
    assert telemetry.decode_clock_event_reasons(0x0) == []
    assert telemetry.decode_clock_event_reasons(0x41 | 0x1000) == ["gpu_idle", "hw_thermal_slowdown", "unknown_0x1000"]


def test_real_nvml_without_a_driver_degrades_to_not_available(monkeypatch):
    import pynvml
    monkeypatch.setattr(telemetry, "pynvml", pynvml)
    monkeypatch.setattr(telemetry, "_init_state", {"pid": None, "error": None})
    if telemetry.nvml_available():
        pytest.skip("an NVIDIA driver is present on this machine")
    with telemetry.TelemetrySampler() as sampler:
        time.sleep(0.05)
    result = sampler.result
    assert set(result) == set(telemetry.RESULT_KEYS)
    assert result["nvml"].startswith("not available: ")
    assert all(result[k] is None for k in telemetry.RESULT_KEYS if k not in ("nvml", "warnings"))
    assert telemetry.device_info(0) == {}
    assert telemetry.gpu_contention_warning(0) is None
