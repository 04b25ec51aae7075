"""ImageNet (ILSVRC-2012) from a class-folder tree or the official archives, with the paper's preprocessing.

Worker processes only decode: each image becomes a fixed-size uint8 tensor (the paper's centre 256x256, or a
random-resized 224 crop) plus its augmentation draws. The batch crosses to the device as uint8 and everything
else runs batched there: mean subtraction (per pixel or per channel), PCA lighting, random crops and flips,
centre or 10-crop evaluation views.

``source`` finds the images (class folders, official archives, the devkit's names), ``decode`` reads one file,
``prepare`` makes the one-time rescaled copy and the mean image, ``workers`` is what runs in loader processes,
``gpu`` decodes JPEG batches with nvjpeg, and ``datamodule`` puts them together.
"""

from alexnet_lab.data.imagenet.datamodule import ImageNetDataModule

__all__ = ["ImageNetDataModule"]
