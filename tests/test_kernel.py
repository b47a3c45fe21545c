"""The exact NWOT kernel forms agree with a NumPy int64 computation."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts.supernet import codes_to_stats, resolve_kernel_impl


@pytest.mark.parametrize("impl", ["matmul", "popcount"])
@pytest.mark.parametrize("batch", [3, 16, 130])
def test_kernel_forms_match_numpy(impl, batch):
    rng = np.random.default_rng(batch)
    # Odd unit counts exercise the padding of the 32-bit packing.
    codes = [rng.standard_normal((batch, 7, 5, 3)), rng.standard_normal((batch, 33))]
    stats = codes_to_stats([jnp.asarray(c) for c in codes], batch, impl)
    c = np.concatenate([(x > 0).reshape(batch, -1) for x in codes], 1).astype(np.int64)
    want = c @ c.T + (1 - c) @ (1 - c).T
    np.testing.assert_array_equal(np.asarray(stats.kernel()), want)
    assert int(stats.units) == 7 * 5 * 3 + 33
    np.testing.assert_array_equal(np.diag(np.asarray(stats.kernel())), 138)


def test_popcount_large_batch_path_matches_matmul():
    # Big enough for the row-by-row (lax.map) branch of the popcount form.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((160, 70000)), jnp.float32)
    a = codes_to_stats([x], 160, "matmul")
    b = codes_to_stats([x], 160, "popcount")
    np.testing.assert_array_equal(np.asarray(a.gram), np.asarray(b.gram))


def test_kernel_impl_names():
    assert resolve_kernel_impl("auto") in ("matmul", "popcount")
    with pytest.raises(ValueError, match="kernel impl"):
        resolve_kernel_impl("fft")


@pytest.mark.parametrize("units", [40000, 70000])
def test_popcount_chunked_words_match_numpy(units):
    # Batch 64 (the paper's): more than 512 words per sample runs the Gram in
    # several cache-sized steps, with zero words padding the last one.
    rng = np.random.default_rng(units)
    x = rng.standard_normal((64, units)).astype(np.float32)
    stats = codes_to_stats([jnp.asarray(x)], 64, "popcount")
    c = (x > 0).astype(np.int64)
    np.testing.assert_array_equal(np.asarray(stats.gram), c @ c.T)
    np.testing.assert_array_equal(np.asarray(stats.active), c.sum(1))
    assert int(stats.units) == units
