"""Result files (fcn_jax.outputs): atomic writes that leave the old content or the new, never a
partial file; metrics.jsonl resumed as one uninterrupted run; failures as one-line
WriteErrors naming the file, the reason and the space left."""

import errno
import json
import os
import stat

import pytest

from fcn_jax.outputs import (
    MetricsWriter,
    WriteError,
    failure_reason,
    read_json,
    space_left,
    write_atomic,
    write_failed,
    write_json,
)


def leftovers(directory) -> list[str]:
    return [p for p in os.listdir(directory) if p.startswith(".tmp-")]


def test_write_atomic_replaces_the_whole_file_with_the_umask_s_mode(tmp_path):
    path = tmp_path / "new" / "dir" / "a.txt"  # its folders are made
    write_atomic(str(path), "first")
    write_atomic(str(path), b"second")
    assert path.read_bytes() == b"second" and not leftovers(path.parent)
    old = os.umask(0o027)
    try:
        write_atomic(str(path), "third")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # not mkstemp's 0600
    write_json(str(tmp_path / "b.json"), {"b": 1, "a": [1.5, None]})
    text = (tmp_path / "b.json").read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')  # sorted keys
    assert read_json(str(tmp_path / "b.json")) == {"a": [1.5, None], "b": 1}


@pytest.mark.parametrize("fails", ["fsync", "replace"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, fails):
    path = tmp_path / "a.json"
    write_json(str(path), {"old": True})

    def no_space(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, fails, no_space)
    with pytest.raises(WriteError) as e:
        write_json(str(path), {"new": True})
    monkeypatch.undo()
    message = str(e.value)
    assert message.startswith(f"cannot write {path}: No space left on device (")
    assert message.endswith(" free)") and "\n" not in message
    assert json.loads(path.read_text()) == {"old": True} and not leftovers(tmp_path)


def test_an_interrupted_write_removes_its_temporary_and_is_not_a_write_error(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(tmp_path / "a.txt"), "data")
    assert os.listdir(tmp_path) == []


def test_failure_reasons_and_space_left(tmp_path):
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert failure_reason(enospc) == "No space left on device"
    try:  # the OS's reason is found down the chain of causes
        try:
            raise enospc
        except OSError as inner:
            raise RuntimeError("tensorstore: write failed") from inner
    except RuntimeError as wrapped:
        assert failure_reason(wrapped) == "No space left on device"
    named = ValueError("INTERNAL: ... Read-only file system [while writing x]")
    assert failure_reason(named) == "Read-only file system"  # named in its text
    assert failure_reason(ValueError("first line\nsecond")) == "ValueError: first line"
    free = space_left(str(tmp_path / "not" / "yet" / "made"))  # its nearest existing folder
    number, unit, word = free.split()
    assert float(number) >= 0 and unit in ("B", "KiB", "MiB", "GiB") and word == "free"
    error = write_failed(str(tmp_path / "x"), enospc, "checkpoint")
    assert str(error).startswith(f"cannot write checkpoint {tmp_path / 'x'}: No space left")
    assert write_failed("y", error) is error  # already one: passed on as it is


def records(workdir) -> list[tuple[int, str]]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["kind"]) for r in map(json.loads, lines)]


def test_a_resumed_metrics_file_reads_as_one_uninterrupted_run(tmp_path):
    """Records after the restored step go, and those of the rewritten kinds at it (the
    evaluation a resumed run repeats); a reader (another process) writes nothing."""
    writer = MetricsWriter(str(tmp_path))
    for step, kind in [(2, "train"), (4, "train"), (4, "eval"), (6, "train"), (6, "eval")]:
        writer.write(step, kind, {"loss": 1.0 / step, "size": "24x24"} if kind == "eval" else
                     {"loss": 1.0 / step})  # fmt: skip
    writer.close()
    assert writer.last("eval") == {"step": 6, "kind": "eval", "loss": 1 / 6, "size": "24x24"}
    assert writer.last("test") is None
    events = os.listdir(tmp_path / "tensorboard")
    assert len(events) == 1 and os.path.getsize(tmp_path / "tensorboard" / events[0]) > 0
    reader = MetricsWriter(str(tmp_path), resume_step=4, writer=False)
    reader.write(5, "train", {"loss": 0.1})
    assert len(records(tmp_path)) == 5  # untouched
    resumed = MetricsWriter(str(tmp_path), resume_step=4, rewritten=("eval",))
    assert records(tmp_path) == [(2, "train"), (4, "train")]
    resumed.write(6, "train", {"loss": 0.2})
    resumed.close()
    assert records(tmp_path) == [(2, "train"), (4, "train"), (6, "train")]
    assert len(os.listdir(tmp_path / "tensorboard")) == 2  # a new events file: purge_step=5


def test_only_a_last_metrics_line_may_be_cut_short(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "kind": "train"}\n{"step": 2, "ki')
    MetricsWriter(str(tmp_path), resume_step=5).close()  # the cut line is dropped
    assert records(tmp_path) == [(1, "train")]
    broken = '{"step": 1, "ki\n{"step": 2, "kind": "train"}\n'
    (tmp_path / "metrics.jsonl").write_text(broken)
    with pytest.raises(ValueError):  # a broken line before others is not a kill mid-write
        MetricsWriter(str(tmp_path), resume_step=5)
    assert (tmp_path / "metrics.jsonl").read_text() == broken  # left for a person to look at


def test_result_writes_fail_whole_in_one_line(tmp_path, monkeypatch):
    """metrics.jsonl keeps no partial record (a resume would trip on it), TensorBoard's file
    is closed at once, atomic files keep the old content; each a one-line WriteError."""
    writer = MetricsWriter(str(tmp_path))
    writer.write(1, "train", {"loss": 1.0})
    before = (tmp_path / "metrics.jsonl").read_text()
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "write", half_then_full)
        with pytest.raises(WriteError, match=r"^cannot write .*metrics.jsonl: No space left on"):
            writer.write(2, "train", {"loss": 0.5})
    assert (tmp_path / "metrics.jsonl").read_text() == before

    def no_space(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(writer._tb._writer._py_recordio_writer, "flush", no_space)
        with pytest.raises(WriteError, match=r"^cannot write TensorBoard events in .*: No space"):
            writer.write(3, "train", {"loss": 0.5})
    assert writer._tb._writer._py_recordio_writer._writer.closed
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", no_space)
        with pytest.raises(WriteError, match=r"^cannot write .*a.json: No space left .* free\)$"):
            write_json(str(tmp_path / "a.json"), {})
    assert not (tmp_path / "a.json").exists()

    with open(tmp_path / "metrics.jsonl", "a") as f:  # a kill mid-write: a line cut short
        f.write('{"step": 3, "kind": "tr')
    MetricsWriter(str(tmp_path), resume_step=2)  # step 3 was written before TensorBoard failed
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_result_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(str(tmp_path / "a.json"), {})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
