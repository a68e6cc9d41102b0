"""Data for training: labelled image sets, loaders, stratified splits, batches and statistics.

A :class:`Dataset` holds images in the library's one image format (float32, NHWC, values in
[0, 1]) with int32 labels and the class names. Everything here is NumPy on the host; shuffling
takes an explicit key (an int seed or a JAX key). Nothing here touches the network unless
``download=True`` is passed. (Augmentation is a random transform:
:func:`cnnjax.transforms.augmentation`.)

* :func:`make_dataset`: NumPy (or JAX) arrays into a checked :class:`Dataset`.
* :func:`load_fashion_mnist`, :func:`load_mnist`: the IDX files (``.gz`` or raw), found on
  disk (an explicit folder, ``$CNNJAX_DATA``, Debian's ``dataset-fashion-mnist`` package, the
  user cache) or downloaded from the official address when asked, checksums verified;
  :func:`read_idx`, :func:`write_idx`.
* :func:`load_cifar10`: CIFAR-10's pickles, read without running code from them.
* :func:`load_image_folder`: one sub-folder of images per class.
* :func:`load_broden`: concept data in the Broden layout (Network Dissection): a checked
  index of images whose :meth:`BrodenData.concept_maps` reads per-pixel and image-level concept
  labels in the :data:`CATEGORIES` colour, object, part, material, scene and texture.
* :func:`image_collection`: a folder of any size, a ``Dataset`` or an array, read a batch at a
  time in a model's input format (:class:`ImageCollection`).
* :func:`split` (deterministic, stratified, 60/20/20 by default), :func:`split_train_val`,
  :func:`split_indices`; :func:`batches`, :func:`epoch_permutation`; :func:`channel_stats`.
"""

from cnnjax.data._broden import CATEGORIES as CATEGORIES
from cnnjax.data._broden import BrodenData as BrodenData
from cnnjax.data._broden import load_broden as load_broden
from cnnjax.data._cifar import CIFAR10_CLASSES as CIFAR10_CLASSES
from cnnjax.data._cifar import load_cifar10 as load_cifar10
from cnnjax.data._collection import ImageCollection as ImageCollection
from cnnjax.data._collection import image_collection as image_collection
from cnnjax.data._dataset import Dataset as Dataset
from cnnjax.data._dataset import make_dataset as make_dataset
from cnnjax.data._folder import load_image_folder as load_image_folder
from cnnjax.data._idx import FASHION_MNIST_CHECKSUMS as FASHION_MNIST_CHECKSUMS
from cnnjax.data._idx import FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES
from cnnjax.data._idx import FASHION_MNIST_URL as FASHION_MNIST_URL
from cnnjax.data._idx import MNIST_CHECKSUMS as MNIST_CHECKSUMS
from cnnjax.data._idx import MNIST_CLASSES as MNIST_CLASSES
from cnnjax.data._idx import MNIST_URL as MNIST_URL
from cnnjax.data._idx import DataNotFoundError as DataNotFoundError
from cnnjax.data._idx import load_fashion_mnist as load_fashion_mnist
from cnnjax.data._idx import load_mnist as load_mnist
from cnnjax.data._idx import read_idx as read_idx
from cnnjax.data._idx import write_idx as write_idx
from cnnjax.data._split import batches as batches
from cnnjax.data._split import channel_stats as channel_stats
from cnnjax.data._split import epoch_permutation as epoch_permutation
from cnnjax.data._split import split as split
from cnnjax.data._split import split_indices as split_indices
from cnnjax.data._split import split_train_val as split_train_val

__all__ = [
    "CATEGORIES",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CHECKSUMS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_URL",
    "MNIST_CHECKSUMS",
    "MNIST_CLASSES",
    "MNIST_URL",
    "BrodenData",
    "DataNotFoundError",
    "Dataset",
    "ImageCollection",
    "batches",
    "channel_stats",
    "epoch_permutation",
    "image_collection",
    "load_cifar10",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "make_dataset",
    "read_idx",
    "split",
    "split_indices",
    "split_train_val",
]
