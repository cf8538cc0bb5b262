"""The fresh processes of tests/test_reuse.py: load every trained case's exported files and
write the logits each gives on the raw test inputs.

    python tests/_reuse_helpers.py regzoo MANIFEST   # checkpoint and hub folder, with regzoo
    python tests/_reuse_helpers.py plain MANIFEST    # pt2 and ONNX, regzoo off sys.path

MANIFEST is a JSON file: `{"out": folder, "cases": [{"id", "x", "ckpt", "hub", "pt2",
"onnx"}]}`, `x` an `.npy` of raw float32 test inputs `(N, *raw_shape)`. Each mode writes
`<out>/<id>.<format>.npy` (logits `(N, num_classes)`) and `<out>/<mode>.json` (what the
process saw). Only the standard library is imported at the top: `plain` takes regzoo off the
import system before anything else is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class _NoRegzoo(importlib.abc.MetaPathFinder):
    """Refuses `regzoo` imports, so a hidden one (a wheel beside torch) fails loudly."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] == "regzoo":
            raise ModuleNotFoundError(f"{fullname} is blocked in this process", name=fullname)
        return None


def _editable(obj: object) -> bool:
    return str(getattr(obj, "__module__", "") or "").startswith("__editable__")


def _in_repo(entry: str) -> bool:
    if "__editable__" in entry:
        return True
    try:  # the repository's folders, but not the environment's site-packages (.venv) in it
        path = Path(entry or ".").resolve()
        return path.is_relative_to(REPO) and not path.is_relative_to(Path(sys.prefix).resolve())
    except (OSError, ValueError):
        return False


def forget_regzoo() -> dict[str, Any]:
    """Take the editable install's finder and the repository's folders off the import system;
    then regzoo must not be found. Returns what was seen, for the test to check."""
    sys.meta_path[:] = [f for f in sys.meta_path if not _editable(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if not _editable(h)]
    sys.path[:] = [p for p in sys.path if not _in_repo(p)]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("regzoo")
    sys.meta_path.insert(0, _NoRegzoo())
    return {"regzoo_spec": None if spec is None else str(spec.origin), "sys_path": sys.path}


def _regzoo(cases: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from regzoo.zoo import load_model

    seen: dict[str, Any] = {}
    for case in cases:
        x = torch.from_numpy(np.load(case["x"]))
        for fmt in ("ckpt", "hub"):
            model = load_model(case[fmt])
            with torch.no_grad():
                logits = model(x)  # (N, *raw_shape) raw -> (N, num_classes)
            np.save(out / f"{case['id']}.{fmt}.npy", logits.numpy())
            seen[f"{case['id']}.{fmt}"] = {
                "model": model.model_name,
                "normalize": model.hparams["normalize"],
                "fitted": model.pipeline.is_fitted,
                "training": model.training,
            }
    return seen


def _plain(cases: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    seen = forget_regzoo()
    import numpy as np
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the machine's cores are shared
    for case in cases:
        x = np.load(case["x"])  # (N, *raw_shape) float32
        program = torch.export.load(case["pt2"]).module()
        with torch.no_grad():
            logits = program(torch.from_numpy(x))
        np.save(out / f"{case['id']}.pt2.npy", logits.numpy())
        session = ort.InferenceSession(case["onnx"], options, providers=["CPUExecutionProvider"])
        [onnx_logits] = session.run(["logits"], {"input": x})
        np.save(out / f"{case['id']}.onnx.npy", onnx_logits)
    seen["regzoo_modules"] = sorted(m for m in sys.modules if m.partition(".")[0] == "regzoo")
    return seen


def main(mode: str, manifest: str) -> None:
    spec = json.loads(Path(manifest).read_text(encoding="utf-8"))
    out = Path(spec["out"])
    seen = (_plain if mode == "plain" else _regzoo)(spec["cases"], out)
    (out / f"{mode}.json").write_text(json.dumps(seen, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
