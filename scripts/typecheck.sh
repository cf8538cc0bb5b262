#!/usr/bin/env bash
# mypy over the package as it is installed: `regzoo.zoo` is the folder zoo/ (package-dir), which
# mypy cannot follow through the editable install's import hook. A tree of links under
# build/typecheck/regzoo/ gives it the installed layout, without copying a file.
set -euo pipefail
cd "$(dirname "$0")/.."
root=build/typecheck/regzoo
rm -rf build/typecheck
mkdir -p "$root"
for f in regzoo/*.py regzoo/py.typed; do ln -s "../../../$f" "$root/$(basename "$f")"; done
for d in zoo datamodules studies; do ln -s "../../../$d" "$root/$d"; done
exec .venv/bin/mypy --config-file pyproject.toml "$root" benchmarks "$@"
