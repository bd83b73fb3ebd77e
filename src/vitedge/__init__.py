"""vitedge: efficient vision transformers, compressed and deployed on edge devices.

The verbs users call live here: ``create_model``, ``list_models``, ``load``, ``save``,
``fuse_bn``, ``profile``, ``prune``, ``quantize``, ``export``.
"""

from vitedge.bench.profile import profile
from vitedge.deploy.export import export
from vitedge.errors import VitedgeError
from vitedge.models import create_model, fuse_bn, list_models
from vitedge.models.checkpoint import load, save
from vitedge.pruning import prune
from vitedge.quantization import quantize

__all__ = ["VitedgeError", "create_model", "export", "fuse_bn", "list_models", "load", "profile", "prune",
           "quantize", "save"]
__version__ = "0.1.0"
