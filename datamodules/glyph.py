"""`glyph`: the lecture's character-vs-background task as a 2-D point set.

Points uniform in [-1, 1]² are labelled 1 ("character") where a rendered character covers them
and 0 ("background") elsewhere; the shape comes from matplotlib's `TextPath`, so any character
of the DejaVu Sans font works. A classifier's decision boundary over this square is the
picture: how well does it trace the character?
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.textpath import TextPath

from regzoo.datamodules._registry import register_datamodule
from regzoo.datamodules.points import PointSet

# The character fills this share of the square's side, so it never touches the border.
FILL = 0.8


@register_datamodule("glyph")
class Glyph(PointSet):
    """Points labelled by whether `character` covers them.

    Args:
        character: One printable character, e.g. "A" or "8".
        n_samples: Points in the whole data set (test split included).
        noise: Standard deviation of gaussian jitter added after labelling (label noise near the
            strokes).
    """

    def __init__(
        self, *, character: str = "A", n_samples: int = 2000, noise: float = 0.0, **options: Any
    ) -> None:
        if not isinstance(character, str) or len(character) != 1 or not character.isprintable():
            raise ValueError(
                f"character={character!r} is invalid; allowed: one printable character"
            )
        if character.isspace():
            raise ValueError(f"character={character!r} is invalid; allowed: a visible character")
        self.character = character
        super().__init__(n_samples=n_samples, noise=noise, **options)

    def generate(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(-1.0, 1.0, (self.n_samples, 2))
        y = covers(self.character, x).astype(np.int64)
        if min(y.sum(), len(y) - y.sum()) < 10:
            raise ValueError(
                f"character={self.character!r} with n_samples={self.n_samples} leaves fewer than "
                "10 points in a class; allowed: a larger n_samples or a bolder character"
            )
        return x, y


def covers(character: str, points: np.ndarray) -> np.ndarray:
    """Whether `character`, centred in [-1, 1]² at `FILL` of its side, covers each point.

    The glyph's outlines are combined with the even-odd rule, so the holes of "A", "O" or "8"
    are background (`Path.contains_points` on the compound path would fill them).
    """
    path = TextPath((0, 0), character, size=1, prop=FontProperties(family="DejaVu Sans"))
    low, high = path.vertices.min(axis=0), path.vertices.max(axis=0)
    if not np.all(high > low):
        raise ValueError(f"character={character!r} has no area to label; choose another")
    # Map the square into glyph coordinates rather than the glyph into the square: one transform.
    to_glyph = points * (high - low).max() / (2 * FILL) + (low + high) / 2
    inside = np.zeros(len(points), dtype=bool)
    for outline in path.to_polygons():
        inside ^= Path(outline).contains_points(to_glyph)
    return inside
