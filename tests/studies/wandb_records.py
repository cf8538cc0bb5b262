"""Read an offline W&B run back from its `.wandb` transaction log, with no network or API.

The file is a LevelDB-style log (the format wandb's own datastore writes): a 7-byte file header
(`:W&B`, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each chunk a 7-byte header
(crc32, length, type) and bytes of a serialized `wandb_internal_pb2.Record`, split across blocks
as FIRST/MIDDLE/LAST chunks when it does not fit.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = struct.Struct("<IHB")  # crc32, payload length, chunk type
FILE_HEADER = struct.Struct("<4sHB")  # b":W&B", 0xBEE1, version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class MetricDefinition:
    """One `define_metric` call as recorded: a name or a glob (`val/*`)."""

    step_metric: str = ""
    summary: frozenset[str] = frozenset()  # "max", "min", "last", ...
    hidden: bool = False


@dataclass
class OfflineRun:
    """What an offline run recorded: its run record (the latest: tags added at the end), config,
    metric definitions, history rows and final summary."""

    id: str = ""
    group: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    metrics: dict[str, MetricDefinition] = field(default_factory=dict)  # name or glob
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None


def payloads(path: Path) -> list[bytes]:
    """Every record's bytes, reassembled from its chunks."""
    data = path.read_bytes()
    ident, magic, version = FILE_HEADER.unpack_from(data, 0)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path} is not a W&B log"
    out: list[bytes] = []
    pos, pending = FILE_HEADER.size, b""
    while pos + HEADER.size <= len(data):
        if BLOCK - pos % BLOCK < HEADER.size:  # the block's tail is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = HEADER.unpack_from(data, pos)
        if kind == 0:  # zero-filled space at the end of a file being written
            break
        chunk = data[pos + HEADER.size : pos + HEADER.size + length]
        pos += HEADER.size + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            out.append(pending)
    return out


def read_run(run_dir: Path) -> OfflineRun:
    """Parse the `run-*.wandb` file of one `offline-run-*` directory."""
    (log,) = run_dir.glob("run-*.wandb")
    run = OfflineRun()
    for raw in payloads(log):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run.id, run.group, run.name = rec.run.run_id, rec.run.run_group, rec.run.display_name
            run.tags = list(rec.run.tags)
            run.config.update(_items(rec.run.config.update))
        elif kind == "config":
            run.config.update(_items(rec.config.update))
        elif kind == "history":
            run.history.append(_items(rec.history.item))
        elif kind == "summary":
            run.summary.update(_items(rec.summary.update))
        elif kind == "metric":
            run.metrics[rec.metric.name or rec.metric.glob_name] = _definition(rec.metric)
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
    return run


def _items(items: Any) -> dict[str, Any]:
    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in items}


def _definition(metric: Any) -> MetricDefinition:
    summary = frozenset(f.name for f, on in metric.summary.ListFields() if on)
    return MetricDefinition(metric.step_metric, summary, metric.options.hidden)


# ---- records beyond OfflineRun: the run record's job type, artifacts, logged tables ----------


def records(run_dir: Path) -> list[Any]:
    """Every record of the `run-*.wandb` file of one `offline-run-*` directory, in order."""
    (log,) = run_dir.glob("run-*.wandb")
    out = []
    for raw in payloads(log):
        rec = pb.Record()
        rec.ParseFromString(raw)
        out.append(rec)
    return out


def run_record(run_dir: Path) -> Any:
    """The run's `RunRecord` (run_id, run_group, job_type, display_name, ...)."""
    return next(r.run for r in records(run_dir) if r.WhichOneof("record_type") == "run")


def artifact_records(run_dir: Path) -> list[Any]:
    """The run's logged `ArtifactRecord`s (type, name, aliases, metadata, manifest)."""
    return [r.artifact for r in records(run_dir) if r.WhichOneof("record_type") == "artifact"]


def offline_runs_of(wandb_dir: Path, job_type: str) -> list[Path]:
    """The `offline-run-*` directories under `wandb_dir` whose run has this job type."""
    dirs = sorted(wandb_dir.glob("offline-run-*"))
    return [d for d in dirs if run_record(d).job_type == job_type]


def media_file(run_dir: Path, value: dict[str, Any]) -> dict[str, Any]:
    """The JSON a logged table (`_type` "table-file", or a chart's table) was written to."""
    return dict(json.loads((run_dir / "files" / value["path"]).read_text()))
