"""Checkpoints and hub folders written by regzoo 0.2.0 (the engine before the one executor and
lifecycle: `tests/fixtures/regzoo-0.2.0/`, made by its `make_fixtures.py`) still load, and the
models predict on raw inputs exactly what that version computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from regzoo import load_model

FIXTURES = Path(__file__).parent / "fixtures" / "regzoo-0.2.0"
CASES = ("cnn-digits", "fnn-mnist1d", "rnn-mnist1d")


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("form", ["ckpt", "hub"])
def test_a_model_written_by_regzoo_0_2_0_loads_and_predicts_as_it_did(name: str, form: str) -> None:
    path = FIXTURES / (f"{name}.ckpt" if form == "ckpt" else f"{name}-hub")
    expected = np.load(FIXTURES / f"{name}-expected.npz")
    model = load_model(path)
    with torch.no_grad():
        logits = model(torch.from_numpy(expected["x"])).numpy()
    np.testing.assert_allclose(logits, expected["logits"], rtol=1e-5, atol=1e-6)
