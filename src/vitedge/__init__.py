"""vitedge: efficient vision transformers, compressed and deployed on edge devices."""

from vitedge.errors import VitedgeError
from vitedge.models import create_model, fuse_bn, list_models

__all__ = ["VitedgeError", "create_model", "fuse_bn", "list_models"]
__version__ = "0.1.0"
