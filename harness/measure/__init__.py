"""Measuring one point, child worker process: the entry point (``worker``), the measured work
(``workload``, ``steps``, ``steps_parallel``), ``measurement`` (the order inside a point),
``timing``, ``memory``, ``telemetry`` (NVML), ``peaks`` (GPU peak FLOP table) and ``faults``.
"""
