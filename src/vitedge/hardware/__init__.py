"""Hardware cost models: the operator list of a model, an FPGA accelerator's cycle model, and a
CPU roofline with a per-operator-kind latency breakdown on a real runtime."""

from vitedge.hardware.operators import KINDS, Operator, OperatorList, classify_conv, extract_operators

__all__ = ["KINDS", "Operator", "OperatorList", "classify_conv", "extract_operators"]
