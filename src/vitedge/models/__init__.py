"""Model zoo: both EfficientViT families, state-dict compatible with timm."""

from vitedge.models.layers import fuse_bn
from vitedge.models.registry import create_model, is_model, list_models, register_model

__all__ = ["create_model", "fuse_bn", "is_model", "list_models", "register_model"]
