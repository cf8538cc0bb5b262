"""What is particular to each dataset: generation, labelling, caching, resizing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mnist1d.data import get_dataset_args, make_dataset

from regzoo.datamodules import ArrayDataModule, create_datamodule
from regzoo.datamodules.glyph import covers
from tests.datamodules.conftest import write_image_folder

Make = Callable[..., ArrayDataModule]


def test_mnist1d_is_the_package_dataset_with_its_official_split(make_dm: Make) -> None:
    dm = make_dm("mnist1d")
    loaded = dm.load()
    reference = make_dataset(get_dataset_args())
    np.testing.assert_allclose(loaded.x[:, 0], reference["x"], rtol=1e-6)
    assert loaded.x_test is not None and loaded.x_test.shape == (1000, 1, 40)
    np.testing.assert_array_equal(loaded.y_test, reference["y_test"])
    assert (dm.data_dir / "mnist1d-default.npz").is_file()  # cached, without pickle
    assert len(dm.splits["test"][1]) == 1000


def test_glyph_labels_the_character_and_its_holes() -> None:
    # The centre of "O" is its hole: background. A point on the ring's left stroke: character.
    inside = covers("O", np.array([[0.0, 0.0], [-0.62, 0.0], [0.95, 0.95]]))
    assert inside.tolist() == [False, True, False]
    a, b = create_datamodule("glyph", character="A"), create_datamodule("glyph", character="B")
    assert 0.1 < float(a.splits["train"][1].float().mean()) < 0.5
    assert not np.array_equal(a.splits["train"][1].numpy(), b.splits["train"][1].numpy())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"character": "AB"}, r"character='AB' is invalid; allowed: one printable character"),
        ({"character": " "}, r"character=' ' is invalid"),
        ({"n_samples": 5}, r"n_samples=5 is invalid; allowed: an integer >= 20"),
        ({"noise": -1}, r"noise=-1 is invalid; allowed: a number >= 0"),
    ],
)
def test_glyph_options_are_checked(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_datamodule("glyph", **kwargs)


@pytest.mark.parametrize("name", ["moons", "circles", "xor", "spirals"])
def test_point_sets_take_size_and_noise(name: str) -> None:
    clean = create_datamodule(name, n_samples=200, noise=0.0).load()
    noisy = create_datamodule(name, n_samples=200, noise=0.2).load()
    assert clean.x.shape == (200, 2) and set(np.unique(clean.y)) == {0, 1}
    np.testing.assert_array_equal(clean.y, noisy.y)
    assert float((noisy.x - clean.x).std()) == pytest.approx(0.2, rel=0.15)
    assert np.abs(clean.x).max() <= 1.05  # roughly the unit square


def test_image_folder_resizes_every_image(tmp_path: Path) -> None:
    write_image_folder(tmp_path, per_class=10, classes=3)
    dm = create_datamodule("image_folder", data_dir=tmp_path, image_size=(12, 20))
    assert dm.nominal_classes == 3 and dm.nominal_shape == (3, 12, 20)
    assert dm.input_shape == (3, 12, 20) and dm.num_classes == 3
    loaded = dm.load()
    assert loaded.x.min() >= 0 and loaded.x.max() <= 1
    for c in range(3):  # class c was written with grey level 60·c
        assert abs(float(loaded.x[loaded.y == c].mean()) * 255 - 60 * c) < 6
    grey = create_datamodule("image_folder", data_dir=tmp_path, image_size=8, grayscale=True)
    assert grey.input_shape == (1, 8, 8)


def test_image_folder_uses_train_and_test_folders_as_the_official_split(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", per_class=10, classes=2)
    write_image_folder(tmp_path / "test", per_class=4, classes=2)
    dm = create_datamodule("image_folder", data_dir=tmp_path, image_size=8)
    assert len(dm.splits["test"][1]) == 8
    assert len(dm.splits["train"][1]) + len(dm.splits["val"][1]) == 20


def test_image_folder_without_class_folders_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"needs one sub-folder of images per class"):
        create_datamodule("image_folder", data_dir=tmp_path).setup()
    with pytest.raises(ValueError, match=r"image_size=2 is invalid"):
        create_datamodule("image_folder", image_size=2)
