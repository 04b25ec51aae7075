"""Pure PyTorch networks of the AlexNet family (no Lightning, no Hydra)."""

from alexnet_lab.models.alexnet import AlexNet, paper_init
from alexnet_lab.models.cifar import AlexNetCIFAR, ConvNetCIFAR
from alexnet_lab.models.layers import LRN

__all__ = ["LRN", "AlexNet", "AlexNetCIFAR", "ConvNetCIFAR", "paper_init"]
