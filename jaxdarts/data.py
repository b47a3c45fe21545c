"""Image datasets as NumPy arrays, the search split, and JAX augmentation.

Datasets:

* ``"digits"``: scikit-learn's ``load_digits`` (1,797 real 8x8 grayscale digits that
  ship inside scikit-learn; no network). The default for the quick start and tests.
* ``"cifar10"`` and any TFDS image-classification dataset by name (``"mnist"``,
  ``"cifar100"``, ...): read with ``tfds.data_source`` from an ``array_record``
  build in the TFDS data directory. Reading needs no TensorFlow; preparing the
  data the first time does (``python -m jaxdarts.data prepare --dataset cifar10``).
* ``"npz:PATH"`` or a path ending in ``.npz``: arrays ``images`` and ``labels``
  (and optionally ``test_images``/``test_labels``), see :func:`load_npz`.

The reference pipeline (the reference implementation; docs/semantics.md) splits the 50k CIFAR-10 train
images at random into two halves (:func:`split_indices`), normalises with the
DARTS constants, and augments with a zero-padded random crop, a horizontal flip
and, when enabled, cutout applied after normalisation (:func:`augment`).

Command line::

    python -m jaxdarts.data prepare --dataset cifar10 [--data-dir DIR]
    python -m jaxdarts.data info --dataset NAME [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DataNotFoundError",
    "ImageDataset",
    "augment",
    "batch_indices",
    "default_crop_pad",
    "default_data_dir",
    "load_dataset",
    "load_npz",
    "normalize",
    "prepare_main",
    "split_indices",
    "to_float",
]

CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)

MIN_IMAGE_SIZE = 8
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

_ACCEPTED = (
    "'digits' (scikit-learn's 8x8 digits, no download), 'npz:PATH' or a path "
    "ending in '.npz' (arrays 'images' and 'labels'), or the name of a TFDS "
    "image-classification dataset with 'image' and 'label' features (e.g. "
    "'cifar10', 'cifar100', 'mnist', 'fashion_mnist')"
)
# TFDS builder names: dataset_name[/config_name][:version].
_TFDS_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.\-]+)?(:[0-9.*]+)?$")


class DataNotFoundError(RuntimeError):
    """A dataset that must be prepared first is not in the data directory."""


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """An image-classification dataset held in memory as NumPy arrays.

    Attributes:
        name: The dataset name given to :func:`load_dataset`.
        train_images: ``[N, H, W, C]`` uint8 (or float32 already in ``[0, 1]``).
        train_labels: ``[N]`` int32 class indices.
        test_images: ``[M, H, W, C]``, same dtype and image shape as the train set.
        test_labels: ``[M]`` int32 class indices.
        num_classes: Number of classes (labels lie in ``[0, num_classes)``).
        mean: Per-channel mean in ``[0, 1]`` pixel units, length ``C``.
        std: Per-channel standard deviation in ``[0, 1]`` pixel units, length ``C``.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.ndim != 4:
                raise ValueError(
                    f"{split}_images must be [N, H, W, C], got shape {images.shape}"
                )
            if labels.shape != (images.shape[0],):
                raise ValueError(
                    f"{split}_labels must have shape ({images.shape[0]},), "
                    f"got {labels.shape}"
                )
        if self.test_images.shape[1:] != self.train_images.shape[1:]:
            raise ValueError(
                f"train and test image shapes differ: {self.train_images.shape[1:]} "
                f"vs {self.test_images.shape[1:]}"
            )
        channels = self.train_images.shape[-1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"mean/std need one value per channel ({channels}), got "
                f"{len(self.mean)} and {len(self.std)}"
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        h, w, c = self.train_images.shape[1:]
        return int(h), int(w), int(c)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def default_data_dir() -> str:
    """TFDS's own default data directory: ``$TFDS_DATA_DIR`` or
    ``~/tensorflow_datasets``."""
    return os.path.expanduser(
        os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    )


def load_dataset(name: str, data_dir: str | None = None) -> ImageDataset:
    """Loads a dataset into memory.

    Args:
        name: ``"digits"``; ``"npz:PATH"`` or a path ending in ``.npz``; or a TFDS
            image-classification dataset name such as ``"cifar10"``.
        data_dir: TFDS data directory (TFDS datasets only). Defaults to
            ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.

    Returns:
        The dataset. For TFDS datasets the test set is the ``"test"`` split (or
        ``"validation"`` when there is no test split); mean/std are the DARTS
        constants for CIFAR-10 and are computed from the train images otherwise.

    Raises:
        DataNotFoundError: A TFDS dataset is not prepared in ``data_dir``.
        ValueError: ``name`` is unknown or malformed, or the dataset is not an
            image-classification dataset this loader can read.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"Dataset name must be a non-empty string. Accepted: {_ACCEPTED}"
        )
    name = name.strip()
    if name == "digits":
        return _load_digits()
    if name.startswith("npz:") or name.endswith(".npz"):
        path = name[len("npz:") :] if name.startswith("npz:") else name
        if not path:
            raise ValueError(
                f"'npz:' needs a path, e.g. 'npz:data/x.npz'. Accepted: {_ACCEPTED}"
            )
        return load_npz(path)
    if not _TFDS_NAME_RE.match(name):
        raise ValueError(f"Malformed dataset name {name!r}. Accepted: {_ACCEPTED}")
    return _load_tfds(name, data_dir)


def _load_digits() -> ImageDataset:
    """scikit-learn's digits: pixel values 0..16 scaled to uint8 0..255
    (``round(x * 255 / 16)``), ``[N, 8, 8, 1]``; split by a seed-0 permutation into
    1,437 train and 360 test images (the last ``ceil(0.2 * N)`` of the permutation
    are the test set)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    train_idx, test_idx = _holdout_split(
        len(labels), DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED
    )
    train = (images[train_idx], labels[train_idx])
    return _dataset("digits", train, (images[test_idx], labels[test_idx]), 10)


def _not_found_message(name: str, data_dir: str, detail: str = "") -> str:
    manual = os.path.join(data_dir, "downloads", "manual")
    archive = (
        "cifar-10-binary.tar.gz"
        if name.split(":")[0] == "cifar10"
        else "the dataset's archive"
    )
    lines = [
        f"Dataset {name!r} is not prepared in {data_dir}"
        + (f" ({detail})." if detail else "."),
        "Prepare it once (needs TensorFlow and internet access):",
        "    pip install -e '.[data]'      # in a checkout; else 'jaxdarts[data]'",
        f"    python -m jaxdarts.data prepare --dataset {name} --data-dir {data_dir}",
        f"Offline: put {archive} in {manual}/ and run the same prepare command.",
        "Elsewhere: --data-dir DIR (default $TFDS_DATA_DIR or ~/tensorflow_datasets).",
    ]
    return "\n".join(lines)


def _pick_test_split(split_names: Sequence[str]) -> str:
    """Chooses the held-out split: ``"test"``, else ``"validation"``.

    An empty ``split_names`` means the splits are unknown (e.g. a mocked TFDS);
    ``"test"`` is then assumed.
    """
    names = list(split_names)
    if not names or "test" in names:
        return "test"
    if "validation" in names:
        return "validation"
    raise ValueError(
        f"The dataset has neither a 'test' nor a 'validation' split (splits: {names}); "
        "save your own split with load_npz's test_images/test_labels instead."
    )


def _load_tfds(name: str, data_dir: str | None) -> ImageDataset:
    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError as exc:  # includes tfds' DatasetNotFoundError
        raise ValueError(
            f"Unknown dataset {name!r} ({str(exc).splitlines()[0]}). "
            f"Accepted: {_ACCEPTED}"
        ) from None
    features = builder.info.features
    keys = set(features.keys()) if hasattr(features, "keys") else set()
    if not {"image", "label"} <= keys:
        raise ValueError(
            f"TFDS dataset {name!r} has features {sorted(keys)}, not 'image' and "
            f"'label'. Accepted: {_ACCEPTED}"
        )
    image_shape = tuple(features["image"].shape)
    if len(image_shape) != 3 or any(d is None for d in image_shape):
        raise ValueError(
            f"TFDS dataset {name!r} has images of shape {image_shape}; only fixed-size "
            "[H, W, C] images are supported."
        )
    num_classes = int(features["label"].num_classes)

    def source(split: str) -> Any:
        # Preparedness is checked when opening fails, so that tfds.testing.mock_data
        # (which replaces the reader but leaves no prepared files) keeps working.
        try:
            return tfds.data_source(
                name, split=split, data_dir=data_dir, download=False
            )
        except Exception as exc:
            if not builder.is_prepared():
                raise DataNotFoundError(_not_found_message(name, data_dir)) from exc
            if isinstance(exc, NotImplementedError):  # prepared, but not array_record
                raise DataNotFoundError(
                    _not_found_message(
                        name,
                        data_dir,
                        "it is prepared, but not in the array_record format that "
                        "random access needs; delete that folder or use another data "
                        "directory",
                    )
                ) from exc
            raise

    train_source = source("train")
    split_names = list(train_source.dataset_info.splits.keys())
    test_source = source(_pick_test_split(split_names))
    train_images, train_labels = _read_source(train_source, f"{name} train")
    test_images, test_labels = _read_source(test_source, f"{name} test")
    cifar10 = name.split(":")[0] == "cifar10"
    return _dataset(
        name,
        (train_images, train_labels),
        (test_images, test_labels),
        num_classes,
        (CIFAR10_MEAN, CIFAR10_STD) if cifar10 else None,
    )


def _read_source(source: Any, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads every ``image``/``label`` of a TFDS data source into NumPy arrays."""
    from tqdm.auto import tqdm

    n = len(source)
    if n == 0:
        raise ValueError(f"{desc} split is empty")
    first = source[0]
    image0 = np.asarray(first["image"])
    images = np.empty((n, *image0.shape), dtype=image0.dtype)
    labels = np.empty((n,), dtype=np.int32)
    for i in tqdm(range(n), desc=f"reading {desc}", disable=n < 5000, leave=False):
        example = first if i == 0 else source[i]
        images[i] = example["image"]
        labels[i] = example["label"]
    return images, labels


def _holdout_split(
    n: int, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split: the last ``ceil(test_fraction * n)`` indices of a
    ``np.random.default_rng(seed)`` permutation are the test set."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if n < 2:
        raise ValueError(f"Need at least 2 examples to split, got {n}")
    n_test = min(n - 1, max(1, math.ceil(test_fraction * n)))
    perm = np.random.default_rng(seed).permutation(n)
    return perm[: n - n_test], perm[n - n_test :]


def _dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> ImageDataset:
    """An :class:`ImageDataset` from ``(images, labels)`` pairs.

    Args:
      name: the dataset's name.
      train: ``[N, H, W, C]`` images and ``[N]`` labels.
      test: ``[M, H, W, C]`` images and ``[M]`` labels.
      num_classes: the number of classes.
      stats: per-channel ``(mean, std)``; by default those of the train images.
    """
    mean, std = stats if stats is not None else _channel_stats(train[0])
    return ImageDataset(
        name=name,
        train_images=train[0],
        train_labels=train[1],
        test_images=test[0],
        test_labels=test[1],
        num_classes=num_classes,
        mean=mean,
        std=std,
    )


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std in ``[0, 1]`` pixel units.

    A constant channel gets std 1 so that normalisation stays finite.
    """
    x = images.astype(np.float64)
    if images.dtype == np.uint8:
        x /= 255.0
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    std = x.std(axis=axes)
    std = np.where(std > 0, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_npz(path: str, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """Loads an image-classification dataset from a ``.npz`` file.

    The file holds ``images`` (``[N, H, W, C]`` or grayscale ``[N, H, W]``; uint8 in
    0..255, or floats in ``[0, 1]``) and ``labels`` (``[N]`` integers >= 0), and
    optionally ``test_images``/``test_labels`` in the same form. Without a test set
    the last ``ceil(test_fraction * N)`` images of a seeded permutation are held out.

    Args:
        path: Path of the ``.npz`` file.
        test_fraction: Fraction held out as the test set when the file has none.
        seed: Seed of the held-out permutation.

    Returns:
        The dataset; ``num_classes = max(label) + 1``, mean/std from the train images.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Missing arrays or wrong shapes, dtypes or values.
    """
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such .npz file: {path!r}")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for key in ("images", "labels"):
        if key not in arrays:
            raise ValueError(
                f"{path!r} has no array {key!r} (found {sorted(arrays)}); it needs "
                "'images' [N, H, W(, C)] and 'labels' [N], optionally 'test_images' "
                "and 'test_labels'."
            )
    has_test = ("test_images" in arrays, "test_labels" in arrays)
    if any(has_test) and not all(has_test):
        raise ValueError(
            f"{path!r}: give both 'test_images' and 'test_labels', or neither."
        )
    images, labels = _check_arrays(arrays["images"], arrays["labels"], path, "images")
    if all(has_test):
        test_images, test_labels = _check_arrays(
            arrays["test_images"], arrays["test_labels"], path, "test_images"
        )
        if test_images.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"{path!r}: test_images have shape {test_images.shape[1:]} per image, "
                f"images have {images.shape[1:]}"
            )
        if test_images.dtype != images.dtype:
            raise ValueError(
                f"{path!r}: images are {images.dtype} but test_images are "
                f"{test_images.dtype}; use the same dtype"
            )
        train_images, train_labels = images, labels
    else:
        train_idx, test_idx = _holdout_split(len(labels), test_fraction, seed)
        train_images, train_labels = images[train_idx], labels[train_idx]
        test_images, test_labels = images[test_idx], labels[test_idx]
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    return _dataset(
        f"npz:{path}",
        (train_images, train_labels),
        (test_images, test_labels),
        num_classes,
    )


def _check_arrays(
    images: np.ndarray, labels: np.ndarray, path: str, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validates one images/labels pair; returns ``[N, H, W, C]`` images and int32
    labels."""
    lkey = "labels" if key == "images" else "test_labels"
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(
            f"{path!r}: {key!r} must be [N, H, W, C] or grayscale [N, H, W], got "
            f"shape {images.shape}"
        )
    n, h, w, c = images.shape
    if n == 0:
        raise ValueError(f"{path!r}: {key!r} is empty")
    if h < MIN_IMAGE_SIZE or w < MIN_IMAGE_SIZE:
        raise ValueError(
            f"{path!r}: images must be at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}, "
            f"{key!r} are {h}x{w}"
        )
    if c < 1:
        raise ValueError(f"{path!r}: {key!r} have no channels (shape {images.shape})")
    if images.dtype == np.uint8:
        pass
    elif np.issubdtype(images.dtype, np.floating):
        if not np.all(np.isfinite(images)):
            raise ValueError(f"{path!r}: {key!r} contain NaN or infinite values")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{path!r}: float {key!r} must lie in [0, 1], found [{lo}, {hi}]; "
                "divide by 255 or store uint8"
            )
        images = images.astype(np.float32)
    else:
        raise ValueError(
            f"{path!r}: {key!r} must be uint8 (0..255) or float in [0, 1], got "
            f"{images.dtype}"
        )
    if labels.ndim != 1:
        raise ValueError(
            f"{path!r}: {lkey!r} must be 1-D [N], got shape {labels.shape}"
        )
    if len(labels) != n:
        raise ValueError(
            f"{path!r}: {key!r} has {n} images but {lkey!r} has {len(labels)} labels"
        )
    if np.issubdtype(labels.dtype, np.integer):
        pass
    elif np.issubdtype(labels.dtype, np.floating) and np.all(
        labels == np.round(labels)
    ):
        pass  # integral floats, e.g. labels saved from a float array
    else:
        raise ValueError(
            f"{path!r}: {lkey!r} must be integer class indices, got dtype "
            f"{labels.dtype}"
        )
    if labels.min() < 0:
        raise ValueError(f"{path!r}: {lkey!r} must be >= 0, found {labels.min()}")
    if labels.max() >= np.iinfo(np.int32).max:
        raise ValueError(f"{path!r}: {lkey!r} too large for int32")
    return images, labels.astype(np.int32)


# --------------------------------------------------------------------------------------
# Split and batching
# --------------------------------------------------------------------------------------


def split_indices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's random 50/50 split of the train set.

    With ``perm = np.random.default_rng(seed).permutation(n)``, the first part
    (weight training) is ``perm[: n // 2]`` and the second (validation) is
    ``perm[n // 2 :]``: for odd ``n`` the extra index goes to the second part
    (torch's ``random_split``, used by the reference, gives it to the first; for
    CIFAR-10's 50,000 images there is none). The reference draws from torch's RNG,
    so the halves are the same kind of split, not the same indices.

    Args:
        n: Size of the train set.
        seed: Split seed; the same seed always gives the same split.

    Returns:
        ``(first, second)``: int32 index arrays of lengths ``n // 2`` and
        ``n - n // 2``, disjoint, together covering ``range(n)``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    perm = np.random.default_rng(seed).permutation(n).astype(np.int32)
    return perm[: n // 2], perm[n // 2 :]


def batch_indices(key: jax.Array, n: int, batch_size: int) -> jax.Array:
    """One shuffled epoch of batch indices (the last partial batch is dropped).

    Args:
        key: PRNG key.
        n: Number of examples (static).
        batch_size: Batch size (static).

    Returns:
        ``[n // batch_size, batch_size]`` int32 indices, a prefix of a random
        permutation of ``range(n)``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    num_batches = n // batch_size
    perm = jax.random.permutation(key, n)
    return (
        perm[: num_batches * batch_size]
        .reshape(num_batches, batch_size)
        .astype(jnp.int32)
    )


# --------------------------------------------------------------------------------------
# Pixels and augmentation (JAX)
# --------------------------------------------------------------------------------------


def to_float(images: jax.Array | np.ndarray) -> jax.Array:
    """Converts images to float32 in ``[0, 1]``.

    Args:
        images: ``[..., H, W, C]`` uint8 (0..255, divided by 255) or float (cast).

    Returns:
        float32 array of the same shape.
    """
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"images must be uint8 or float, got {images.dtype}")
    return images.astype(jnp.float32)


def normalize(
    images: jax.Array | np.ndarray,
    mean: Sequence[float] | jax.Array,
    std: Sequence[float] | jax.Array,
) -> jax.Array:
    """``(to_float(images) - mean) / std``, broadcast over the last (channel) axis.

    Args:
        images: ``[..., C]`` uint8 or float images.
        mean: ``[C]`` per-channel mean in ``[0, 1]`` units.
        std: ``[C]`` per-channel standard deviation.

    Returns:
        float32 array of the same shape.
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (to_float(images) - mean) / std


def default_crop_pad(image_size: int) -> int:
    """Crop padding for an image size: 4 for 32 (the reference), scaled as
    ``max(1, image_size // 8)`` otherwise (1 for 8x8 digits)."""
    return max(1, int(image_size) // 8)


def augment(
    key: jax.Array,
    images: jax.Array | np.ndarray,
    *,
    crop_pad: int = 4,
    flip: bool = True,
    cutout: int = 0,
    mean: Sequence[float] | jax.Array | None = None,
    std: Sequence[float] | jax.Array | None = None,
) -> jax.Array:
    """Random crop, horizontal flip and cutout, independently per sample.

    Order (the reference implementation; docs/semantics.md): crop of the zero-padded image, flip,
    [normalise], cutout. Given ``mean`` and ``std``, raw images go in and the
    normalisation happens between the flip and the cutout, exactly as in the
    reference (padding is black, cutout sets normalised pixels to 0). Without
    them the images are used as they are (e.g. already normalised: the padding
    and the cutout both write 0).

    Args:
        key: PRNG key; each sample gets its own draws.
        images: ``[B, H, W, C]`` uint8 or float images, any size and channels.
        crop_pad: Zero padding on each side before the random ``H x W`` crop (top-left
            offset uniform in ``[0, 2 * crop_pad]``); 0 disables the crop. Static.
        flip: Flip left-right with probability 0.5. Static.
        cutout: Side of the zeroed square (0 disables). Its centre is uniform in
            ``[0, H) x [0, W)``; it covers rows ``[cy - cutout // 2, cy - cutout // 2 +
            cutout)`` (same for columns) clipped at the border, in every channel, and
            always fires. For even sides this is DARTS' ``Cutout``. Static.
        mean: Optional ``[C]`` mean; with ``std``, normalise before the cutout.
        std: Optional ``[C]`` standard deviation.

    Returns:
        float32 ``[B, H, W, C]``. Jittable (with the static arguments fixed) and
        vmappable over extra leading axes.
    """
    if (mean is None) != (std is None):
        raise ValueError("Give both mean and std, or neither")
    if crop_pad < 0 or cutout < 0:
        raise ValueError(f"crop_pad and cutout must be >= 0, got {crop_pad}, {cutout}")
    images = to_float(images)
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    if mean is not None:
        mean = jnp.asarray(mean, jnp.float32)
        std = jnp.asarray(std, jnp.float32)
    # One compiled function per configuration and shape: fast when called eagerly,
    # inlined when the caller is itself jitted or vmapped.
    return _augment_jit(
        key,
        images,
        mean,
        std,
        crop_pad=int(crop_pad),
        flip=bool(flip),
        cutout=int(cutout),
    )


@functools.partial(jax.jit, static_argnames=("crop_pad", "flip", "cutout"))
def _augment_jit(
    key: jax.Array,
    images: jax.Array,
    mean: jax.Array | None,
    std: jax.Array | None,
    *,
    crop_pad: int,
    flip: bool,
    cutout: int,
) -> jax.Array:
    """:func:`augment` on float32 ``[B, H, W, C]`` images (see there)."""
    b, h, w, c = images.shape
    # Every random number is drawn here for the whole batch (one draw per sample):
    # three PRNG calls in all keeps compilation short.
    k_crop, k_flip, k_cut = jax.random.split(key, 3)
    offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * crop_pad + 1)
    flips = jax.random.bernoulli(k_flip, 0.5, (b,))
    centres = jax.random.randint(k_cut, (b, 2), 0, jnp.array([h, w]))

    def one(x: jax.Array, offset: jax.Array, flip_it: jax.Array, centre: jax.Array):
        if crop_pad > 0:
            p = crop_pad
            padded = jnp.pad(x, ((p, p), (p, p), (0, 0)))
            start = (offset[0], offset[1], jnp.zeros((), offset.dtype))
            x = jax.lax.dynamic_slice(padded, start, (h, w, c))
        if flip:
            x = jnp.where(flip_it, x[:, ::-1, :], x)
        if mean is not None:
            x = (x - mean) / std
        if cutout > 0:
            y0 = centre[0] - cutout // 2
            x0 = centre[1] - cutout // 2
            rows = jnp.arange(h)
            cols = jnp.arange(w)
            in_rows = (rows >= y0) & (rows < y0 + cutout)
            in_cols = (cols >= x0) & (cols < x0 + cutout)
            box = in_rows[:, None] & in_cols[None, :]
            x = jnp.where(box[:, :, None], jnp.zeros((), x.dtype), x)
        return x

    return jax.vmap(one)(images, offsets, flips, centres)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _missing_prepare_deps() -> list[str]:
    missing = []
    if not _tensorflow_available():
        missing.append("tensorflow")
    if importlib.util.find_spec("importlib_resources") is None:
        missing.append("importlib_resources")
    return missing


def _prepare(name: str, data_dir: str) -> int:
    missing = _missing_prepare_deps()
    if missing:
        print(
            f"Preparing a TFDS dataset needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install them with\n"
            "    pip install 'jaxdarts[data]'\n"
            "and run this command again. (Reading a prepared dataset needs neither.)",
            file=sys.stderr,
        )
        return 2
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError as exc:
        print(f"Unknown dataset {name!r}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    manual = os.path.join(data_dir, "downloads", "manual")
    print(f"Preparing {name!r} in {data_dir} (manual downloads are read from {manual})")
    try:
        builder.download_and_prepare(file_format="array_record")
    except Exception as exc:  # network, checksum, disk: say what to do next
        print(
            f"Preparing {name!r} failed: {type(exc).__name__}: {exc}\n\n"
            + _not_found_message(name, data_dir),
            file=sys.stderr,
        )
        return 1
    print(f"Prepared {name!r} at {builder.data_dir}")
    return 0


def _info(name: str, data_dir: str) -> int:
    try:
        ds = load_dataset(name, data_dir=data_dir)
    except (DataNotFoundError, ValueError, FileNotFoundError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    h, w, c = ds.image_shape
    print(f"dataset:      {ds.name}")
    print(f"image shape:  {h}x{w}x{c} ({ds.train_images.dtype})")
    print(f"classes:      {ds.num_classes}")
    print(f"train:        {len(ds.train_labels)} images")
    print(f"test:         {len(ds.test_labels)} images")
    print(f"mean:         {', '.join(f'{v:.6f}' for v in ds.mean)}")
    print(f"std:          {', '.join(f'{v:.6f}' for v in ds.std)}")
    return 0


def prepare_main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``prepare`` (download and build a TFDS dataset as
    ``array_record``) and ``info`` (print a dataset's shapes and classes).

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        Exit status: 0 on success, 1 on failure, 2 on usage errors or when
        TensorFlow (needed to prepare) is missing.
    """
    parser = argparse.ArgumentParser(
        prog="python -m jaxdarts.data",
        description="Prepare or inspect the image datasets jaxdarts reads.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_prepare = sub.add_parser(
        "prepare",
        help="download and build a TFDS dataset (needs TensorFlow: "
        "pip install 'jaxdarts[data]')",
    )
    p_info = sub.add_parser("info", help="print a dataset's shapes, classes and stats")
    for p in (p_prepare, p_info):
        p.add_argument(
            "--dataset", default="cifar10", help="dataset name (default cifar10)"
        )
        p.add_argument(
            "--data-dir",
            default=None,
            help="TFDS data directory "
            "(default $TFDS_DATA_DIR or ~/tensorflow_datasets)",
        )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    data_dir = (
        os.path.expanduser(args.data_dir) if args.data_dir else default_data_dir()
    )
    if args.command == "prepare":
        return _prepare(args.dataset, data_dir)
    return _info(args.dataset, data_dir)


if __name__ == "__main__":
    raise SystemExit(prepare_main())
