"""`python -m regzoo.datamodules preview NAME [--out PNG] [--set KEY=VALUE ...]`.

Writes a PNG of training samples next to augmented draws of them. `--set` takes any
`create_datamodule` option (`normalize=standard`, `augment_backend=albumentations`) and each
augmentation as `augment.<name>` (`augment.rotation=20`, `augment.flip=horizontal`). Without any
`augment.*` a moderate demonstration dose for the kind of data is shown. A mistake prints one
line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from regzoo._dicts import set_dotted
from regzoo.datamodules._augment import data_kind
from regzoo.datamodules._download import DownloadError
from regzoo.datamodules._registry import create_datamodule
from regzoo.datamodules.preview import DEMO_AUGMENT, write_preview

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m regzoo.datamodules", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    preview = sub.add_parser("preview", help="PNG of original vs augmented training samples")
    preview.add_argument("name", help="dataset name, e.g. digits, mnist1d, moons")
    preview.add_argument("--out", type=Path, help="PNG file (default: runs/preview-NAME.png)")
    preview.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a datamodule option or augment.<name>; repeatable",
    )
    preview.add_argument("--samples", type=int, default=8, help="samples shown (default 8)")
    return p


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`["augment.rotation=20", "normalize=standard"]` -> datamodule options."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r} is invalid; allowed: KEY=VALUE")
        value = yaml.safe_load(text)
        path = key.split(".")
        if len(path) > 2 or (len(path) == 2 and (path[0] != "augment" or not path[1])):
            raise ValueError(f"--set {key!r} is invalid; allowed: an option or augment.<name>")
        set_dotted(options, path, value)
    return options


def preview(name: str, overrides: Sequence[str], out: Path | None, samples: int) -> Path:
    options = parse_overrides(overrides)
    if not options.get("augment"):
        # Built once without: an image folder's or a table's shape is known per instance; a
        # user's datamodule may not say (unknown: an image's default).
        nominal = getattr(create_datamodule(name, **options), "nominal_input_shape", None)
        shape = (nominal() if callable(nominal) else None) or (3, 1, 1)
        options["augment"] = dict(DEMO_AUGMENT[data_kind(shape)])
    dm = create_datamodule(name, **options)
    dm.prepare_data()  # no Trainer here to call it: fetch an online dataset's files
    return write_preview(dm, out or Path("runs") / f"preview-{name}.png", samples=samples)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        path = preview(args.name, args.overrides, args.out, args.samples)
    except (ValueError, TypeError, DownloadError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
