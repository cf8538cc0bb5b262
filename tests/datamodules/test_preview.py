"""`python -m regzoo.datamodules preview NAME`: a PNG of original vs augmented samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from regzoo.datamodules.__main__ import main, parse_overrides
from tests.datamodules.conftest import write_iris


def test_overrides_reach_the_augment_mapping() -> None:
    options = parse_overrides(["augment.rotation=20", "augment.flip=both", "normalize=standard"])
    assert options == {"augment": {"rotation": 20, "flip": "both"}, "normalize": "standard"}


@pytest.mark.parametrize("name", ["digits", "moons"])
def test_preview_writes_a_png(tmp_path: Path, name: str) -> None:
    out = tmp_path / f"{name}.png"
    assert main(["preview", name, "--out", str(out), "--set", "augment.noise=0.05"]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 200


def test_preview_shows_a_signal_with_the_albumentations_backend(in_tmp: Path) -> None:
    argv = ["preview", "mnist1d", "--set", "augment_backend=albumentations", "--set", "data_dir=d"]
    assert main(argv) == 0
    assert (in_tmp / "runs" / "preview-mnist1d.png").is_file()


def test_a_table_preview_gets_the_dose_for_feature_vectors(in_tmp: Path) -> None:
    """A table's shape is known once its file is read: its default dose is a feature vector's
    (noise), never an image's rotation."""
    write_iris(in_tmp / "iris.csv")
    assert main(["preview", "csv", "--set", "path=iris.csv", "--set", "target=species"]) == 0
    assert (in_tmp / "runs" / "preview-csv.png").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["preview", "digits", "--set", "augment.spin=3"], "unknown key(s) spin"),
        (["preview", "moons", "--set", "augment.rotation=10"], "makes no sense for point sets"),
        (["preview", "nope"], "unknown dataset 'nope'"),
        (["preview", "digits", "--set", "rotation"], "allowed: KEY=VALUE"),
    ],
)
def test_mistakes_print_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main([*argv, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
