"""Pure PyTorch networks of the AlexNet family (no Lightning, no Hydra)."""

from alexnet_lab.models.alexnet import AlexNet, paper_init
from alexnet_lab.models.cifar import AlexNetCIFAR
from alexnet_lab.models.cudaconvnet import CudaConvnet18pct, CudaConvnetLocal
from alexnet_lab.models.layers import LRN, LocallyConnected2d, ParamGroup, ResponseNorm, SpatialResponseNorm

__all__ = [
    "LRN",
    "AlexNet",
    "AlexNetCIFAR",
    "CudaConvnet18pct",
    "CudaConvnetLocal",
    "LocallyConnected2d",
    "ParamGroup",
    "ResponseNorm",
    "SpatialResponseNorm",
    "paper_init",
]
