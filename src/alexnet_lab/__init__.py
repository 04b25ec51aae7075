"""alexnet-lab: AlexNet on CIFAR-10 and ImageNet with Lightning + Hydra."""

__version__ = "0.1.0"
