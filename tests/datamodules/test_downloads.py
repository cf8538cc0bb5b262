"""Online datasets: downloads are checksum-verified and atomic; the real file formats are read.

No network: files in the published formats are written by the tests and served from `file://`
URLs or placed in `data_dir` beforehand.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from datamodules import DownloadError, create_datamodule
from datamodules._download import fetch
from datamodules.mnist import Mnist
from tests.datamodules.conftest import idx_arrays, write_cifar, write_idx_set


def test_fetch_downloads_and_verifies(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"regzoo" * 1000)
    dest = tmp_path / "data" / "copy.bin"
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    assert fetch(source.as_uri(), dest, md5=md5) == dest
    assert dest.read_bytes() == source.read_bytes()


def test_checksum_mismatch_is_clear_and_leaves_no_file(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"not what was published")
    dest = tmp_path / "data" / "copy.bin"
    with pytest.raises(DownloadError, match=r"checksum mismatch for file://.*expected 0{32}"):
        fetch(source.as_uri(), dest, md5="0" * 32)
    assert list(dest.parent.iterdir()) == []  # no half-written or unverified file


def test_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    missing = (tmp_path / "nowhere.gz").as_uri()
    with pytest.raises(DownloadError, match=r"could not download file://.*place the file at"):
        fetch(missing, tmp_path / "data" / "x.gz", md5="0" * 32)


def test_mnist_from_a_mirror_is_refused_when_files_differ_from_the_published_ones(
    tmp_path: Path,
) -> None:
    write_idx_set(tmp_path / "mirror", idx_arrays())
    dm = create_datamodule(
        "mnist", data_dir=tmp_path / "data", mirror=(tmp_path / "mirror").as_uri()
    )
    with pytest.raises(DownloadError, match=r"checksum mismatch.*train-images-idx3-ubyte\.gz"):
        dm.prepare_data()
    assert not any((tmp_path / "data").rglob("*.gz"))


def test_mnist_downloads_from_a_mirror_with_matching_checksums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = idx_arrays(seed=5)
    write_idx_set(tmp_path / "mirror", arrays)
    published = {
        p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (tmp_path / "mirror").iterdir()
    }
    # These files stand in for the published ones, so their checksums are the expected ones.
    monkeypatch.setattr(Mnist, "md5", published)
    dm = create_datamodule(
        "mnist", data_dir=tmp_path / "data", mirror=(tmp_path / "mirror").as_uri()
    )
    loaded = dm.load()
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(published)
    np.testing.assert_array_equal(loaded.x, arrays["x"][:, None] / np.float32(255))
    np.testing.assert_array_equal(loaded.y, arrays["y"])


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files_are_read_as_images_and_labels(tmp_path: Path, name: str) -> None:
    arrays = idx_arrays(seed=3)
    write_idx_set(tmp_path / name, arrays)
    loaded = create_datamodule(name, data_dir=tmp_path).load()
    assert loaded.x.shape == (len(arrays["y"]), 1, 28, 28) and loaded.x.dtype == np.float32
    np.testing.assert_array_equal(loaded.x[:, 0] * 255, arrays["x"])
    np.testing.assert_array_equal(loaded.y, arrays["y"])
    assert loaded.x_test is not None and loaded.y_test is not None
    np.testing.assert_array_equal(loaded.x_test[:, 0] * 255, arrays["x_test"])
    np.testing.assert_array_equal(loaded.y_test, arrays["y_test"])


def test_a_file_that_is_not_idx_is_refused(tmp_path: Path) -> None:
    write_idx_set(tmp_path / "mnist", idx_arrays())
    images = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    images.write_bytes(b"\x1f\x8b not idx")
    with pytest.raises(ValueError, match=r"is not a gzipped IDX file"):
        create_datamodule("mnist", data_dir=tmp_path).load()
    with gzip.open(images, "wb") as f:
        f.write(b"\x00\x00\x0d\x03" + bytes(12))  # IDX of floats: not the published format
    with pytest.raises(ValueError, match=r"not an IDX file of unsigned bytes"):
        create_datamodule("mnist", data_dir=tmp_path).load()


def test_cifar_binary_records_are_read_channel_first(tmp_path: Path) -> None:
    written = write_cifar(tmp_path / "cifar10" / "cifar-10-binary.tar.gz", seed=7)
    loaded = create_datamodule("cifar10", data_dir=tmp_path).load()
    assert loaded.x.shape == (100, 3, 32, 32)
    np.testing.assert_allclose(loaded.x * 255, written["x"], atol=1e-3)  # R, G, B planes
    np.testing.assert_array_equal(loaded.y, written["y"])
    assert loaded.x_test is not None
    np.testing.assert_allclose(loaded.x_test * 255, written["x_test"], atol=1e-3)
    np.testing.assert_array_equal(loaded.y_test, written["y_test"])
