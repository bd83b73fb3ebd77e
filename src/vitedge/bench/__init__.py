"""Measurement: model cost (params, MACs, memory) and latency on a runtime."""

from vitedge.bench.latency import LatencyResult, measure_latency, torch_latency
from vitedge.bench.profile import profile

__all__ = ["LatencyResult", "measure_latency", "profile", "torch_latency"]
