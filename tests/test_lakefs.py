"""The lake's store behaves the same on a folder and on S3 (a real moto server).

What the checkpoints, the sink and every reader rely on: a file appears whole or not
at all (also when the writer raises half way, the case pyarrow gets wrong on S3), the
same listing and walking on both kinds, and a lake-wide lock that admits one holder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pulse import lakefs, lakefs_s3
from pulse.lakefs import LakeStore, LakeStoreError
from pulse.settings import Settings, SettingsError
from tests.s3 import S3Server


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LakeStore:
    if request.param == "folder":
        return LakeStore.open(str(tmp_path / "lake"))
    s3: S3Server = request.getfixturevalue("s3")
    return LakeStore.open(s3.new_lake(), Settings.from_env(s3.env()))


def test_put_get_list_delete_walk_mean_the_same_on_both(store: LakeStore):
    assert store.list("_pulse/checkpoints") == [] and store.walk("events") == {}
    with pytest.raises(FileNotFoundError):
        store.get("_pulse/checkpoints/p0001.bin")
    store.put("_pulse/checkpoints/p0001.bin", b"one")
    store.put("_pulse/checkpoints/p0000.bin", b"zero")
    store.put("_pulse/checkpoints/p0001.bin", b"one again")  # replaced whole
    store.put("_pulse/checkpoints/old/p0000.bin", b"deeper")
    assert store.get("_pulse/checkpoints/p0001.bin") == b"one again"
    listed = store.list("_pulse/checkpoints")
    assert [(e.name, e.size) for e in listed] == [("p0000.bin", 4), ("p0001.bin", 9)]
    now = store.now()
    assert all(abs(now - e.mtime) < 30 for e in listed)
    assert "checkpoints" in store.subfolders("_pulse")
    assert store.subfolders("_pulse/checkpoints") == ["old"]
    walked = store.walk("_pulse/checkpoints")
    assert {k: [e.name for e in v] for k, v in walked.items()} == {
        "_pulse/checkpoints": ["p0000.bin", "p0001.bin"],
        "_pulse/checkpoints/old": ["p0000.bin"]}
    store.delete("_pulse/checkpoints/p0000.bin")
    store.delete("_pulse/checkpoints/p0000.bin")  # gone already: not an error
    assert [e.name for e in store.list("_pulse/checkpoints")] == ["p0001.bin"]


@pytest.mark.parametrize("size", [1000, lakefs_s3.SINGLE_PUT_BYTES + 1000])
def test_a_writer_that_raises_leaves_nothing_and_a_whole_file_reads_back(
        store: LakeStore, size: int):
    data = os.urandom(size)

    def half_then_fail(fh: object) -> None:
        fh.write(data[: size // 2])  # type: ignore[attr-defined]
        raise RuntimeError("the writer failed half way")

    with pytest.raises(RuntimeError):
        store.put_with("events/tenant_id=a/date=2026-01-02/x.parquet", half_then_fail)
    assert store.walk("events") == {}
    written = store.put_with("events/tenant_id=a/date=2026-01-02/x.parquet",
                             lambda fh: fh.write(data))
    assert written == size
    assert store.get("events/tenant_id=a/date=2026-01-02/x.parquet") == data
    assert [e.name for e in store.list("events/tenant_id=a/date=2026-01-02")] == ["x.parquet"]


def test_parquet_and_datasets_read_through_the_store(store: LakeStore):
    table = pa.table({"id": ["a", "b"], "kafka_offset": pa.array([1, 2], pa.int64())})
    store.put_parquet("events/tenant_id=t/date=2026-01-02/f.parquet", table)
    assert store.read_table("events/tenant_id=t/date=2026-01-02/f.parquet").equals(table)
    dataset = store.dataset(["events/tenant_id=t/date=2026-01-02/f.parquet"], table.schema)
    assert dataset.to_table().equals(table)
    dirs = lakefs.lake_dirs(store)
    assert [(d.kind, d.tenant_id, d.rel) for d in dirs] == [
        ("events", "t", "events/tenant_id=t/date=2026-01-02")]
    assert lakefs.tenants(store) == ["t"]


def test_one_holder_of_the_lake_lock_and_a_dead_holder_does_not_block(store: LakeStore):
    with store.exclusive("compact") as first:
        assert first
        with store.exclusive("compact") as second:
            assert not second
    with store.exclusive("compact") as again:
        assert again
    if store.local:
        return
    # A holder killed (kill -9 leaves its lease behind) on this machine is stale at once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    store.put(f"_pulse/compact.lock/{os.uname().nodename}-{dead}-0000abcd", b"")
    with store.exclusive("compact") as mine:
        assert mine


def test_bad_settings_are_one_line_naming_the_variable(s3: S3Server):
    with pytest.raises(SettingsError, match="AWS_ENDPOINT_URL_S3"):
        Settings.from_env({**s3.env(), "AWS_ENDPOINT_URL_S3": "127.0.0.1:9000"})
    with pytest.raises(SettingsError, match="PULSE_LAKE"):
        Settings.from_env({"PULSE_LAKE": "s3://Bad_Bucket/x"})
    with pytest.raises(SettingsError, match="PULSE_LAKE"):
        Settings.from_env({"PULSE_LAKE": "gs://bucket/x"})
    good = Settings.from_env(s3.env())
    missing = LakeStore.open("s3://no-such-bucket-here/x", good)
    with pytest.raises(LakeStoreError, match="PULSE_LAKE: the bucket 'no-such-bucket-here'"):
        missing.check()
    nowhere = Settings.from_env({**s3.env(), "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1"})
    with pytest.raises(LakeStoreError, match="AWS_ENDPOINT_URL_S3") as caught:
        LakeStore.open(s3.new_lake(), nowhere).check()
    assert "\n" not in str(caught.value)
