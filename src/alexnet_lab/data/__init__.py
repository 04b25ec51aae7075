"""LightningDataModules and batched tensor transforms (no Lightning module, no networks)."""

from alexnet_lab.data.cifar10 import CIFAR10DataModule
from alexnet_lab.data.common import ClassificationData, DataError
from alexnet_lab.data.imagenet import ImageNetDataModule
from alexnet_lab.data.loader import TensorBatches
from alexnet_lab.data.transforms import Normalize

__all__ = [
    "CIFAR10DataModule",
    "ClassificationData",
    "DataError",
    "ImageNetDataModule",
    "Normalize",
    "TensorBatches",
]
