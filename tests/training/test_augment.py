"""Training-only augmentation (cnnserve.training.augment): the NumPy affine + elastic sampler and its pipeline,
and the cross-validation folds of benchmarks/accuracy_cv.py."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

from cnnserve.training.augment import distort, gaussian_matrix
from cnnserve.training.data import DEFAULT_DATA, load_mnist
from cnnserve.training.registry import Augmentation
from support import ROOT

ELASTIC = Augmentation(
    max_shift=0.08, max_rotation=0.03, max_zoom=0.1, max_shear=0.15, elastic_alpha=34.0, elastic_sigma=4.0
)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_mnist(DEFAULT_DATA).x[:32]


def test_no_transform_returns_the_images_unchanged(digits):
    out = distort(digits, np.random.default_rng(0), Augmentation())
    assert out.dtype == np.uint8 and out.shape == digits.shape
    np.testing.assert_array_equal(out, digits)


def test_a_pure_shift_moves_the_digit_by_whole_pixels():
    """max_shift alone, drawn at its bound: the sampler's geometry checked against np.roll."""
    image = np.zeros((1, 28, 28, 1), np.uint8)
    image[0, 10:18, 12:15] = 200

    class Bound:  # rng.uniform(-1, 1) -> always 1: shift = max_shift * size = 2 pixels
        def uniform(self, low, high, size):
            return np.ones(size)

    out = distort(image, Bound(), Augmentation(max_shift=2 / 28))
    np.testing.assert_array_equal(out, np.roll(image, (2, 2), axis=(1, 2)))


def test_elastic_distortion_changes_strokes_but_keeps_the_ink(digits):
    out = distort(digits, np.random.default_rng(0), ELASTIC)
    assert out.dtype == np.uint8 and out.shape == digits.shape
    changed = np.abs(out.astype(int) - digits).mean(axis=(1, 2, 3))
    assert (changed > 5).all()  # every digit moved
    ink = out.astype(float).sum(axis=(1, 2, 3)) / digits.astype(float).sum(axis=(1, 2, 3))
    assert ((ink > 0.6) & (ink < 1.6)).all()  # a distorted digit, not a blank or a smear
    # The elastic field alone (no affine part) also moves every digit.
    only_elastic = Augmentation(elastic_alpha=34.0, elastic_sigma=4.0)
    assert (
        np.abs(distort(digits, np.random.default_rng(1), only_elastic).astype(int) - digits).sum(axis=(1, 2, 3)) > 0
    ).all()


def test_the_same_seed_gives_the_same_distortions(digits):
    a = distort(digits, np.random.default_rng(7), ELASTIC)
    b = distort(digits, np.random.default_rng(7), ELASTIC)
    c = distort(digits, np.random.default_rng(8), ELASTIC)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gaussian_matrix_is_a_unit_sum_kernel_cut_at_the_borders():
    g = gaussian_matrix(28, 4.0)
    assert g.shape == (28, 28)
    np.testing.assert_allclose(g.sum(axis=1)[14], 1.0, atol=1e-3)  # interior row: the whole kernel
    assert g.sum(axis=1)[0] < 0.6  # first row: half of it (zero outside the image)
    np.testing.assert_allclose(g, g.T)


AFFINE = dataclasses.replace(ELASTIC, elastic_alpha=0.0, numpy_sampler=True)


@pytest.mark.slow
@pytest.mark.parametrize("aug", [ELASTIC, AFFINE], ids=["elastic", "affine"])
def test_train_dataset_with_the_numpy_sampler_is_seeded_and_uint8(digits, aug):
    """Both MNIST recipes' pipelines: reproducible for a seed, labels with their images, every image resampled."""
    from cnnserve.training.augment import train_dataset

    y = np.arange(len(digits)) % 10

    def batches(seed):
        ds = train_dataset(digits, y, 8, aug, seed)
        return [(x.numpy(), t.numpy()) for x, t in ds]

    a, b = batches(3), batches(3)
    assert len(a) == 4 and a[0][0].dtype == np.uint8 and a[0][0].shape == (8, 28, 28, 1)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # The NumPy sampler made them (not Keras' layers): the first batch is distort() of those digits.
    ds = train_dataset(digits, np.arange(len(digits)), 8, aug, 3)
    first_x, first_ids = next(iter(ds))
    expected = distort(digits[first_ids.numpy()], np.random.default_rng(3), aug)
    np.testing.assert_array_equal(first_x.numpy(), expected)
    # The labels travel with their images; the images are distorted, not the originals.
    originals = {int(t): digits[i] for i, t in enumerate(y)}
    for xa, ya in a:
        for img, t in zip(xa, ya, strict=True):
            assert not np.array_equal(img, originals[int(t)])


def test_cv_folds_are_stratified_disjoint_and_fixed():
    spec = importlib.util.spec_from_file_location("accuracy_cv", ROOT / "benchmarks" / "accuracy_cv.py")
    cv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cv)
    y = load_mnist(DEFAULT_DATA).y
    folds = cv.stratified_folds(y, 5)
    np.testing.assert_array_equal(folds, cv.stratified_folds(y, 5))
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    sizes = np.bincount(folds)
    assert sizes.sum() == len(y) and sizes.max() - sizes.min() <= 10
    for cls in range(10):  # each class spread evenly over the folds
        per_fold = np.bincount(folds[y == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    # Every recipe names only fields the registry's Variant has.
    fields = {f.name for f in dataclasses.fields(cv.recipe_variant("mnist_cnn", "registry"))}
    for per_variant in cv.recipes().values():
        for overrides in per_variant.values():
            assert set(overrides) <= fields
