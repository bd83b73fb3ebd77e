"""Model zoo: both EfficientViT families, state-dict compatible with timm."""

from vitedge.models.layers import fuse_bn
from vitedge.models.registry import create_model, is_model, list_models, register_model

# The families register their models on import (after the registry they register into).
from vitedge.models import efficientvit_mit, efficientvit_msra, efficientvit_seg  # noqa: E402, F401  isort: skip

__all__ = ["create_model", "fuse_bn", "is_model", "list_models", "register_model"]
