"""Read an offline W&B run back from its `.wandb` transaction log, with no network or API.

The file is a LevelDB-style log, read here as wandb-core writes it (`core/pkg/leveldb/record.go`,
`core/internal/transactionlog/writer.go`) and as its own reader checks it: a 7-byte file header
(`:W&B`, magic 0xBEE1, version 0) that is the start of the first 32 KiB block (blocks are counted
from the start of the file), then chunks, each a 7-byte header (crc32 of the type byte and the
data, data length, type) and the bytes of a serialized `wandb_internal_pb2.Record`. A chunk never
crosses a block: a record that does not fit is split FIRST, MIDDLE..., LAST, and a block's last
0-6 bytes, too few for a header, are zeros.

wandb-core keeps the block it is filling in memory and writes it only when the block is full or the
run's stream closes, and `run.finish()` returns before that (it only tells the service that the
run is done): for a moment after it, the file holds only the header and the full blocks, and a read
can even catch the last block half-written. So `payloads` checks every chunk and, by default,
waits until the log ends cleanly with the run's `exit` record.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = struct.Struct("<IHB")  # crc32, payload length, chunk type
FILE_HEADER = struct.Struct("<4sHB")  # b":W&B", 0xBEE1, version
ZEROED, FULL, FIRST, MIDDLE, LAST = 0, 1, 2, 3, 4  # wandb never writes ZEROED (all-zero) space
WAIT_S = 30.0  # wandb-core closes a finished run's log within milliseconds; a loaded CI is slower


class LogError(Exception):
    """A `.wandb` file that is not (yet) a whole log: truncated, corrupt, or without its exit."""


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


def payloads(path: Path, *, finished: bool = True, wait_s: float = WAIT_S) -> list[bytes]:
    """Every record's bytes, reassembled from its chunks, each chunk's checksum verified.

    With `finished` (the default), wait up to `wait_s` for the log of a finished run to be
    whole: ending cleanly, with the run's `exit` record. Without it, the records complete so far
    (a live or killed run): a chunk or record cut off at the end of the file is left out.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _whole(path) if finished else scan(path.read_bytes(), path)[0]
        except LogError:
            if not finished or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _whole(path: Path) -> list[bytes]:
    out, tail = scan(path.read_bytes(), path)
    if tail:
        raise LogError(f"{path}: {tail}; was the run finished?")
    if not any(_is_exit(raw) for raw in reversed(out)):
        raise LogError(f"{path}: no exit record in {len(out)} records; was the run finished?")
    return out


def scan(data: bytes, path: Path | str = "<log>") -> tuple[list[bytes], str]:
    """The complete records in `data`, and why its end is not clean ("" when it is).

    A checksum that does not match, a chunk longer than its block or a chunk out of sequence
    (a MIDDLE with no FIRST...) is a `LogError`; a chunk or record cut off by the end of the data
    is what a log that is still being written looks like, and is returned as the reason.
    """
    out: list[bytes] = []
    parts: list[bytes] | None = None  # the chunks of a record begun and not yet ended
    try:
        for pos, kind, body in _chunks(data, path):
            if kind == ZEROED and parts is None:
                continue
            starts = kind in (FULL, FIRST)
            if kind not in (FULL, FIRST, MIDDLE, LAST) or starts != (parts is None):
                raise LogError(f"{path}: chunk type {kind} out of sequence at byte {pos}")
            parts = [*(parts or []), body]
            if kind in (FULL, LAST):
                out.append(b"".join(parts))
                parts = None
    except _CutOff as cut:
        return out, str(cut)
    return out, "" if parts is None else f"a record cut off at byte {len(data)}"


class _CutOff(Exception):
    """The data ends inside the file header or a chunk: the writer has not written the rest."""


def _chunks(data: bytes, path: Path | str) -> Iterator[tuple[int, int, bytes]]:
    """Each chunk's offset, type and checksummed data, as wandb-core's reader walks them."""
    if len(data) < FILE_HEADER.size:
        raise _CutOff(f"{len(data)} bytes, less than the file header")
    if FILE_HEADER.unpack_from(data) != (b":W&B", 0xBEE1, 0):
        raise LogError(f"{path} is not a W&B log (header {data[: FILE_HEADER.size]!r})")
    pos = FILE_HEADER.size  # the header is the start of the first block
    while pos < len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER.size:  # the block's trailer: zeros, too short for a chunk header
            pos += room
            continue
        if pos + HEADER.size > len(data):
            raise _CutOff(f"a chunk header cut off at byte {len(data)}")
        crc, length, kind = HEADER.unpack_from(data, pos)
        if (crc, length, kind) == (0, 0, ZEROED):  # as LevelDB's reader: skip the block's rest
            yield pos, ZEROED, b""
            pos += room
            continue
        if HEADER.size + length > room:
            raise LogError(f"{path}: chunk at byte {pos} of length {length} overflows its block")
        body = data[pos + HEADER.size : pos + HEADER.size + length]
        if len(body) < length:
            raise _CutOff(f"a chunk cut off at byte {len(data)} (from {pos}, length {length})")
        if zlib.crc32(bytes([kind]) + body) != crc:
            raise LogError(f"{path}: chunk at byte {pos} (type {kind}) fails its checksum")
        yield pos, kind, body
        pos += HEADER.size + length


def _is_exit(raw: bytes) -> bool:
    rec = pb.Record()
    rec.ParseFromString(raw)
    return rec.WhichOneof("record_type") == "exit"


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
