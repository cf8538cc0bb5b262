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
class OfflineRun:
    """What an offline run recorded: its run record, config, history rows and final summary."""

    group: str = ""
    name: str = ""
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
            run.group, run.name = rec.run.run_group, rec.run.display_name
            run.config.update(_items(rec.run.config.update))
        elif kind == "config":
            run.config.update(_items(rec.config.update))
        elif kind == "history":
            run.history.append(_items(rec.history.item))
        elif kind == "summary":
            run.summary.update(_items(rec.summary.update))
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
    return run


def _items(items: Any) -> dict[str, Any]:
    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in items}
