"""The test suite's `.wandb` reader against logs that wandb-core really wrote.

wandb-core writes the block it is filling only when the block is full or the run's stream closes,
and that close comes after `run.finish()` returns: a read right after `finish` used to find the
header alone (an empty run: `test_tracking`'s "assert 'o1e746al' == ''"), the full blocks alone,
or the last block half-written (a truncated chunk: protobuf's `DecodeError`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import wandb
from wandb.proto import wandb_internal_pb2 as pb

from tests.studies.wandb_records import (
    BLOCK,
    FILE_HEADER,
    FIRST,
    HEADER,
    MIDDLE,
    LogError,
    OfflineRun,
    _chunks,
    payloads,
    read_run,
    scan,
)

ROWS = 300  # ~250 bytes each: the log spans several 32 KiB blocks
BIG_ROW = 40  # this row holds 70 kB: FIRST, MIDDLE and LAST chunks


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OfflineRun]:
    """A real offline run, and what `read_run` found in it right after `finish` returned."""
    save_dir = tmp_path_factory.mktemp("wandb")
    settings = wandb.Settings(console="off", x_disable_stats=True, silent=True)
    run = wandb.init(mode="offline", dir=save_dir, project="records", settings=settings)
    for i in range(ROWS):
        run.log({"i": i, "text": ("b" * 70_000) if i == BIG_ROW else f"row {i} " + "a" * 200})
    run.finish()
    (run_dir,) = (save_dir / "wandb").glob("offline-run-*")
    return run_dir, read_run(run_dir)


def test_a_run_read_right_after_finish_has_every_row(logged: tuple[Path, OfflineRun]) -> None:
    _, run = logged
    assert [row["i"] for row in run.history] == list(range(ROWS))
    assert len(run.history[BIG_ROW]["text"]) == 70_000
    assert run.exit_code == 0 and run.summary["i"] == ROWS - 1


def test_blocks_are_counted_from_the_start_of_the_file(logged: tuple[Path, OfflineRun]) -> None:
    (log,) = logged[0].glob("run-*.wandb")
    data = log.read_bytes()
    split = [(pos, kind, body) for pos, kind, body in _chunks(data, log) if kind in (FIRST, MIDDLE)]
    assert len(data) > 3 * BLOCK and any(kind == MIDDLE for _, kind, _ in split)
    # wandb-core's file header is the start of block 0: a chunk that continues in the next
    # block ends exactly on a multiple of 32 KiB from byte 0, not from byte 7.
    assert all((pos + HEADER.size + len(body)) % BLOCK == 0 for pos, _, body in split)


def test_no_record_is_lost_or_spliced(logged: tuple[Path, OfflineRun]) -> None:
    (log,) = logged[0].glob("run-*.wandb")
    nums = []
    for raw in payloads(log):
        rec = pb.Record()
        rec.ParseFromString(raw)  # a record cut or spliced wrongly fails here
        nums.append(rec.num)
    assert nums == list(range(1, len(nums) + 1))  # wandb-core numbers the records it writes


@pytest.mark.parametrize("cut", ["header only", "full blocks only", "inside a chunk"])
def test_a_log_still_being_written_is_waited_for(
    logged: tuple[Path, OfflineRun], tmp_path: Path, cut: str
) -> None:
    """The states wandb-core leaves a log in between `finish` and closing the stream."""
    (log,) = logged[0].glob("run-*.wandb")
    whole = log.read_bytes()
    end = {
        "header only": FILE_HEADER.size,
        "full blocks only": len(whole) // BLOCK * BLOCK,
        "inside a chunk": len(whole) - 5,
    }[cut]
    live = tmp_path / log.name
    live.write_bytes(whole[:end])
    closing = threading.Timer(0.3, lambda: live.write_bytes(whole))
    closing.start()
    try:
        assert payloads(live) == scan(whole)[0]
    finally:
        closing.join()


def test_records_so_far_are_read_from_a_log_that_ends_inside_a_record(
    logged: tuple[Path, OfflineRun], tmp_path: Path
) -> None:
    (log,) = logged[0].glob("run-*.wandb")
    whole = log.read_bytes()
    records, _ = scan(whole)
    live = tmp_path / log.name
    live.write_bytes(whole[: 2 * BLOCK])  # a killed run: its last block was never written
    done, tail = scan(live.read_bytes())
    assert tail and 0 < len(done) < len(records) and done == records[: len(done)]
    assert payloads(live, finished=False) == done
    with pytest.raises(LogError, match="was the run finished"):
        payloads(live, wait_s=0.05)


def test_a_corrupt_chunk_is_an_error_not_a_decode_failure(
    logged: tuple[Path, OfflineRun], tmp_path: Path
) -> None:
    (log,) = logged[0].glob("run-*.wandb")
    data = bytearray(log.read_bytes())
    data[FILE_HEADER.size + HEADER.size] ^= 0xFF  # the first record's first byte
    bad = tmp_path / log.name
    bad.write_bytes(bytes(data))
    with pytest.raises(LogError, match=r"byte 7 .* fails its checksum"):
        payloads(bad, finished=False)
    with pytest.raises(LogError, match="not a W&B log"):
        scan(b"PK\x03\x04" + bytes(data[4:]))
