"""Tests for jaxdarts.data: loaders, split, batching and augmentation."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts import data

# --------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def test_digits_shapes_and_values(digits):
    assert digits.name == "digits"
    assert digits.train_images.shape == (1437, 8, 8, 1)
    assert digits.test_images.shape == (360, 8, 8, 1)
    assert digits.train_images.dtype == np.uint8
    assert digits.test_images.dtype == np.uint8
    assert digits.train_labels.dtype == np.int32
    assert digits.test_labels.dtype == np.int32
    assert digits.image_shape == (8, 8, 1)
    assert digits.num_classes == 10
    assert digits.train_images.max() == 255 and digits.train_images.min() == 0
    labels = np.concatenate([digits.train_labels, digits.test_labels])
    assert set(np.unique(labels)) == set(range(10))


def test_digits_matches_sklearn_and_split(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    expected = np.rint(raw.images * 255.0 / 16.0).astype(np.uint8)[..., None]
    perm = np.random.default_rng(0).permutation(len(raw.target))
    np.testing.assert_array_equal(digits.train_images, expected[perm[:1437]])
    np.testing.assert_array_equal(digits.test_images, expected[perm[1437:]])
    np.testing.assert_array_equal(digits.train_labels, raw.target[perm[:1437]])
    np.testing.assert_array_equal(digits.test_labels, raw.target[perm[1437:]])
    again = data.load_dataset("digits")
    np.testing.assert_array_equal(again.train_labels, digits.train_labels)


def test_digits_mean_std(digits):
    x = digits.train_images.astype(np.float64) / 255.0
    np.testing.assert_allclose(digits.mean, [x.mean()], rtol=1e-12)
    np.testing.assert_allclose(digits.std, [x.std()], rtol=1e-12)
    assert isinstance(digits.mean, tuple) and len(digits.std) == 1


# --------------------------------------------------------------------------------------
# TFDS (mocked; no TensorFlow needed)
# --------------------------------------------------------------------------------------


def test_tfds_cifar10_mocked(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        ds = data.load_dataset("cifar10", data_dir=str(tmp_path))
    assert ds.train_images.shape == (6, 32, 32, 3)
    assert ds.test_images.shape == (6, 32, 32, 3)
    assert ds.train_images.dtype == np.uint8
    assert ds.train_labels.dtype == np.int32 and ds.train_labels.shape == (6,)
    assert ds.num_classes == 10
    for labels in (ds.train_labels, ds.test_labels):
        assert labels.min() >= 0 and labels.max() < 10
    assert ds.mean == data.CIFAR10_MEAN
    assert ds.std == data.CIFAR10_STD
    assert ds.image_shape == (32, 32, 3)


def test_tfds_other_dataset_computes_stats(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5):
        ds = data.load_dataset("mnist", data_dir=str(tmp_path))
    assert ds.train_images.shape == (5, 28, 28, 1)
    x = ds.train_images.astype(np.float64) / 255.0
    np.testing.assert_allclose(ds.mean, [x.mean()], rtol=1e-12)
    np.testing.assert_allclose(ds.std, [x.std()], rtol=1e-12)


@pytest.fixture(scope="module")
def prepared_tfds_dir(tmp_path_factory):
    """A real (not mocked) array_record TFDS build, made without TensorFlow.

    TFDS's Image feature needs TensorFlow to encode, so the images are stored as a
    uint8 Tensor feature named 'image'; reading goes through the same
    ``tfds.data_source`` path as CIFAR-10. Only 'train' and 'validation' splits:
    the loader must fall back to 'validation'.
    """
    tfds = pytest.importorskip("tensorflow_datasets")

    class JaxdartsTestImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(9, 8, 3), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            )
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(7, 0),
                "validation": self._generate_examples(4, 1),
            }

        def _generate_examples(self, n, seed):
            for i, image in enumerate(_tiny_images(n, seed)):
                yield i, {"image": image, "label": i % 3}

    data_dir = tmp_path_factory.mktemp("tfds")
    JaxdartsTestImages(data_dir=str(data_dir)).download_and_prepare(
        file_format="array_record"
    )
    return str(data_dir)


def _tiny_images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 9, 8, 3), dtype=np.uint8)


def _sorted_rows(images):
    return sorted(bytes(x) for x in images)


def test_tfds_real_array_record(prepared_tfds_dir):
    ds = data.load_dataset("jaxdarts_test_images", data_dir=prepared_tfds_dir)
    assert ds.train_images.shape == (7, 9, 8, 3)
    assert ds.test_images.shape == (4, 9, 8, 3)  # the 'validation' split
    assert ds.num_classes == 3
    assert ds.train_labels.dtype == np.int32
    assert _sorted_rows(ds.train_images) == _sorted_rows(_tiny_images(7, 0))
    assert _sorted_rows(ds.test_images) == _sorted_rows(_tiny_images(4, 1))
    # Each image keeps its own label (label = index in generation order).
    for images, labels, seed in (
        (ds.train_images, ds.train_labels, 0),
        (ds.test_images, ds.test_labels, 1),
    ):
        raw = _tiny_images(len(labels), seed)
        for image, label in zip(images, labels, strict=True):
            (index,) = [i for i in range(len(raw)) if np.array_equal(raw[i], image)]
            assert label == index % 3
    x = ds.train_images.astype(np.float64) / 255.0
    np.testing.assert_allclose(ds.mean, x.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(ds.std, x.std(axis=(0, 1, 2)), rtol=1e-12)


def test_tfds_real_not_prepared_elsewhere(prepared_tfds_dir, tmp_path):
    with pytest.raises(data.DataNotFoundError, match="manual"):
        data.load_dataset("jaxdarts_test_images", data_dir=str(tmp_path))


def test_data_not_found(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_dataset("cifar10", data_dir=str(tmp_path))
    msg = str(info.value)
    assert str(tmp_path) in msg
    assert "prepare" in msg and "manual" in msg
    assert "jaxdarts[data]" in msg and "cifar-10-binary.tar.gz" in msg
    assert isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("name", ["not_a_dataset_xyz", "Bad Name!", "", "npz:"])
def test_unknown_or_malformed_name(name):
    with pytest.raises(ValueError, match="digits"):
        data.load_dataset(name)


def test_pick_test_split():
    assert data._pick_test_split(["train", "test"]) == "test"
    assert data._pick_test_split(["train", "validation"]) == "validation"
    assert data._pick_test_split([]) == "test"
    with pytest.raises(ValueError, match="neither"):
        data._pick_test_split(["train"])


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == str(tmp_path)
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert data.default_data_dir().endswith("tensorflow_datasets")


# --------------------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------------------


def _save(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_load_npz_good(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (20, 9, 10, 2), dtype=np.uint8)
    labels = rng.integers(0, 4, 20)
    path = _save(tmp_path / "d.npz", images=images, labels=labels)
    ds = data.load_npz(path, test_fraction=0.25, seed=3)
    perm = np.random.default_rng(3).permutation(20)
    np.testing.assert_array_equal(ds.train_images, images[perm[:15]])
    np.testing.assert_array_equal(ds.test_labels, labels[perm[15:]])
    assert ds.train_labels.dtype == np.int32
    assert ds.image_shape == (9, 10, 2)
    assert ds.num_classes == int(labels.max()) + 1
    x = images[perm[:15]].astype(np.float64) / 255.0
    np.testing.assert_allclose(ds.mean, x.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(ds.std, x.std(axis=(0, 1, 2)), rtol=1e-12)
    # Same file through load_dataset, both spellings.
    for name in (path, "npz:" + path):
        ds2 = data.load_dataset(name)
        np.testing.assert_array_equal(
            ds2.train_images, data.load_npz(path).train_images
        )


def test_load_npz_grayscale_float_with_test(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.random((6, 8, 8))
    test_images = rng.random((3, 8, 8))
    path = _save(
        tmp_path / "g.npz",
        images=images,
        labels=np.array([0, 1, 2, 0, 1, 2]),
        test_images=test_images,
        test_labels=np.array([2, 1, 5]),
    )
    ds = data.load_npz(path)
    assert ds.train_images.shape == (6, 8, 8, 1)
    assert ds.test_images.shape == (3, 8, 8, 1)
    assert ds.train_images.dtype == np.float32
    np.testing.assert_allclose(ds.train_images[..., 0], images, rtol=1e-6)
    assert ds.num_classes == 6
    np.testing.assert_allclose(ds.mean, [images.mean()], rtol=1e-6)


_IMG = np.zeros((4, 8, 8, 3), np.uint8)
_LAB = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"labels": _LAB}, "no array 'images'"),
        ({"images": _IMG}, "no array 'labels'"),
        ({"images": _IMG, "labels": _LAB[:3]}, "4 images but 'labels' has 3"),
        ({"images": np.zeros((4, 7, 8, 3), np.uint8), "labels": _LAB}, "at least 8x8"),
        ({"images": _IMG, "labels": _LAB + 0.5}, "integer class indices"),
        ({"images": _IMG, "labels": _LAB.astype(str)}, "integer class indices"),
        ({"images": _IMG, "labels": -_LAB - 1}, ">= 0"),
        ({"images": _IMG, "labels": _LAB[:, None]}, "1-D"),
        ({"images": np.zeros((4, 8), np.uint8), "labels": _LAB}, r"\[N, H, W, C\]"),
        ({"images": _IMG.astype(np.int64), "labels": _LAB}, "uint8"),
        ({"images": _IMG.astype(np.float32) + 2.0, "labels": _LAB}, r"\[0, 1\]"),
        ({"images": _IMG, "labels": _LAB, "test_images": _IMG}, "both"),
        (
            {
                "images": _IMG,
                "labels": _LAB,
                "test_images": np.zeros((2, 9, 8, 3), np.uint8),
                "test_labels": _LAB[:2],
            },
            "shape",
        ),
    ],
)
def test_load_npz_bad(tmp_path, arrays, match):
    path = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        data.load_npz(path)


def test_load_npz_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.load_npz(str(tmp_path / "nope.npz"))


# --------------------------------------------------------------------------------------
# split and batching
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 10, 11])
def test_split_indices(n):
    a, b = data.split_indices(n, seed=42)
    assert len(a) == n // 2 and len(b) == n - n // 2
    assert set(a.tolist()).isdisjoint(b.tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), np.arange(n))
    a2, b2 = data.split_indices(n, seed=42)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)


def test_split_indices_differs_across_seeds():
    a0, _ = data.split_indices(1000, seed=0)
    a1, _ = data.split_indices(1000, seed=1)
    assert set(a0.tolist()) != set(a1.tolist())


def test_batch_indices():
    key = jax.random.key(0)
    idx = data.batch_indices(key, 23, 5)
    assert idx.shape == (4, 5) and idx.dtype == jnp.int32
    flat = np.asarray(idx).ravel()
    assert len(set(flat.tolist())) == 20
    assert flat.min() >= 0 and flat.max() < 23
    np.testing.assert_array_equal(idx, data.batch_indices(key, 23, 5))
    jitted = jax.jit(data.batch_indices, static_argnums=(1, 2))
    np.testing.assert_array_equal(jitted(key, 23, 5), idx)
    other = data.batch_indices(jax.random.key(1), 23, 5)
    assert not np.array_equal(other, idx)
    assert data.batch_indices(key, 3, 5).shape == (0, 5)


# --------------------------------------------------------------------------------------
# pixels and augmentation
# --------------------------------------------------------------------------------------


def test_to_float_and_normalize():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    f = data.to_float(x)
    assert f.dtype == jnp.float32
    np.testing.assert_allclose(f, x / 255.0, rtol=1e-6)
    assert data.to_float(x.astype(np.float64) / 255.0).dtype == jnp.float32
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    expected = (x / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(
        data.normalize(x, mean, std), expected, rtol=1e-5, atol=1e-6
    )
    jitted = jax.jit(data.normalize)(x, jnp.array(mean), jnp.array(std))
    np.testing.assert_allclose(jitted, expected, rtol=1e-5, atol=1e-6)


def test_default_crop_pad():
    assert data.default_crop_pad(32) == 4
    assert data.default_crop_pad(8) == 1
    assert data.default_crop_pad(28) == 3


def _images(b=16, h=8, w=10, c=2, seed=0):
    # Distinct, non-zero values so windows and flips are identifiable.
    rng = np.random.default_rng(seed)
    return (rng.permutation(b * h * w * c).reshape(b, h, w, c) + 1).astype(np.float32)


def test_augment_identity_and_shape():
    x = _images()
    out = data.augment(jax.random.key(0), x, crop_pad=0, flip=False, cutout=0)
    assert out.shape == x.shape and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, x)


def test_augment_flip_only():
    x = _images(b=32)
    out = np.asarray(data.augment(jax.random.key(1), x, crop_pad=0, flip=True))
    flipped = []
    for i in range(len(x)):
        same = np.array_equal(out[i], x[i])
        flip = np.array_equal(out[i], x[i, :, ::-1])
        assert same != flip
        flipped.append(flip)
    assert 0 < sum(flipped) < len(x)  # per-sample randomness


def _windows(x, p):
    padded = np.pad(x, ((p, p), (p, p), (0, 0)))
    h, w = x.shape[:2]
    for dy, dx in itertools.product(range(2 * p + 1), repeat=2):
        yield (dy, dx), padded[dy : dy + h, dx : dx + w]


def test_augment_crop_is_window_of_padded():
    p = 2
    x = _images(b=24)
    out = np.asarray(data.augment(jax.random.key(2), x, crop_pad=p, flip=False))
    offsets = set()
    for i in range(len(x)):
        hits = [o for o, win in _windows(x[i], p) if np.array_equal(out[i], win)]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 3


def test_augment_crop_and_flip():
    p = 1
    x = _images(b=16)
    out = np.asarray(data.augment(jax.random.key(3), x, crop_pad=p, flip=True))
    for i in range(len(x)):
        candidates = [win for _, win in _windows(x[i], p)]
        candidates += [win[:, ::-1] for win in candidates]
        assert any(np.array_equal(out[i], c) for c in candidates)


@pytest.mark.parametrize(("h", "w", "side"), [(8, 8, 4), (12, 9, 5), (8, 8, 10)])
def test_augment_cutout(h, w, side):
    x = np.ones((64, h, w, 3), np.float32)
    out = np.asarray(
        data.augment(jax.random.key(4), x, crop_pad=0, flip=False, cutout=side)
    )
    sizes = set()
    for i in range(len(x)):
        zero = out[i] == 0
        assert np.all(zero == zero[..., :1])  # same pixels in every channel
        assert np.all(out[i][~zero] == 1)
        rows = np.flatnonzero(zero[..., 0].any(axis=1))
        cols = np.flatnonzero(zero[..., 0].any(axis=0))
        assert rows.size and cols.size  # always fires
        y1, y2, x1, x2 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        box = np.zeros((h, w), bool)
        box[y1:y2, x1:x2] = True
        np.testing.assert_array_equal(zero[..., 0], box)  # exactly one rectangle
        for lo, hi, size in ((y1, y2, h), (x1, x2, w)):
            assert hi - lo <= side
            assert hi - lo == side or lo == 0 or hi == size  # shorter only if clipped
        sizes.add((y1, x1))
    assert len(sizes) > 3


def test_augment_with_normalisation_order():
    # Reference order: pad (black) + crop, flip, normalise, cutout (sets 0).
    rng = np.random.default_rng(5)
    x = rng.integers(1, 256, (16, 8, 8, 3), dtype=np.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    key = jax.random.key(6)
    out = np.asarray(data.augment(key, x, crop_pad=2, flip=False, mean=mean, std=std))
    raw = np.asarray(data.augment(key, x, crop_pad=2, flip=False))
    expected = (raw - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # Crop is the same window as on the raw images: padding becomes -mean/std.
    cut = np.asarray(
        data.augment(key, x, crop_pad=0, flip=False, cutout=4, mean=mean, std=std)
    )
    assert np.any(cut == 0) and np.all((cut == 0).sum(axis=(1, 2, 3)) > 0)


def test_augment_jit_vmap_determinism():
    x = _images(b=4, h=8, w=8, c=3)
    key = jax.random.key(7)
    kw = dict(crop_pad=1, flip=True, cutout=3)
    eager = data.augment(key, x, **kw)
    np.testing.assert_array_equal(eager, data.augment(key, x, **kw))
    jitted = jax.jit(functools.partial(data.augment, **kw))(key, x)
    np.testing.assert_allclose(jitted, eager)
    other = data.augment(jax.random.key(8), x, **kw)
    assert not np.array_equal(other, eager)
    # vmap over an extra leading axis (e.g. envs), each with its own key.
    xs = np.stack([x, x[::-1], x * 2])
    keys = jax.random.split(key, 3)
    vm = jax.vmap(lambda k, im: data.augment(k, im, **kw))(keys, xs)
    for e in range(3):
        np.testing.assert_allclose(vm[e], data.augment(keys[e], xs[e], **kw))
    # uint8 input works too.
    u8 = data.augment(key, np.full((2, 8, 8, 1), 255, np.uint8), crop_pad=0, flip=False)
    np.testing.assert_array_equal(u8, np.ones((2, 8, 8, 1), np.float32))


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def test_prepare_without_tensorflow(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(data, "_tensorflow_available", lambda: False)
    rc = data.prepare_main(
        ["prepare", "--dataset", "cifar10", "--data-dir", str(tmp_path)]
    )
    assert rc == 2
    assert "pip install 'jaxdarts[data]'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_info_digits(capsys):
    assert data.prepare_main(["info", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "8x8x1" in out and "classes:      10" in out and "1437" in out


def test_info_missing(tmp_path, capsys):
    pytest.importorskip("tensorflow_datasets")
    rc = data.prepare_main(
        ["info", "--dataset", "cifar10", "--data-dir", str(tmp_path)]
    )
    assert rc == 1
    assert "prepare" in capsys.readouterr().err


def test_module_import_is_light():
    import subprocess
    import sys

    code = "import sys, jaxdarts.data; print('tensorflow_datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
