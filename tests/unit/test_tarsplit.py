"""The tar-split format and its recording, without root (overlayctl.archive.tarsplit, _splitter, regenerate).

A tar is read by the real ``TarReader`` with a ``Splitter`` attached, its
regular files' content written by the test itself under a plain directory
(what the extractor would do, minus owners, devices and whiteouts, which
need root), and the tar written back from both.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from overlayctl.archive import tarsplit as ts
from overlayctl.archive._splitter import Splitter
from overlayctl.archive._tarstream import TarReader
from overlayctl.archive.extract import split_name
from overlayctl.archive.regenerate import FilesChanged, write_original_tar
from overlayctl.errors import ArchiveError
from tests.tarbuild import Entry, build_tar

DIGEST = hashlib.sha256(b"x").digest()


def encode(build) -> bytes:
    buf = io.BytesIO()
    writer = ts.TarSplitWriter(buf)
    build(writer)
    return buf.getvalue()


def decode(data: bytes) -> list[ts.Record]:
    return list(ts.read_tar_split(io.BytesIO(data)))


def test_records_round_trip_and_raw_bytes_are_merged():
    def build(w: ts.TarSplitWriter) -> None:
        w.raw(b"head")
        w.raw(b"er")
        w.file(b"etc/passwd", 10)
        w.raw(b"\0" * 6)
        w.file("dir/caf\xe9 \n".encode("latin-1"), 3)
        w.end(DIGEST)

    assert decode(encode(build)) == [
        ts.Raw(b"header"),
        ts.FileRef(b"etc/passwd", 10),
        ts.Raw(b"\0" * 6),
        ts.FileRef(b"dir/caf\xe9 \n", 3),
        ts.End(6 + 10 + 6 + 3, DIGEST),
    ]


def test_long_raw_runs_are_split():
    size = 2 * ts.MAX_RAW + 5
    records = decode(encode(lambda w: (w.raw(b"\0" * size), w.end(DIGEST))))
    assert [len(r.data) for r in records[:-1]] == [ts.MAX_RAW, ts.MAX_RAW, 5]
    assert records[-1] == ts.End(size, DIGEST)
    assert records[-1].diff_id == "sha256:" + DIGEST.hex()


def test_the_file_is_gzip_with_the_magic_first():
    data = encode(lambda w: (w.raw(b"abc"), w.end(DIGEST)))
    assert data[:2] == b"\x1f\x8b"
    assert gzip.decompress(data).startswith(ts.MAGIC)


def test_writer_refuses_empty_files_and_absolute_paths():
    w = ts.TarSplitWriter(io.BytesIO())
    with pytest.raises(ValueError):
        w.file(b"a", 0)
    with pytest.raises(ValueError):
        w.file(b"/etc/passwd", 1)


def _payload(*records: bytes) -> bytes:
    return gzip.compress(ts.MAGIC + b"".join(records))


GOOD = _payload(b"R\0\0\0\x03abc", b"E" + (3).to_bytes(8, "big") + DIGEST)
DAMAGED = [
    ("empty", b"", "corrupt|truncated"),
    ("not-gzip", b"plain text", "corrupt"),
    ("bad-magic", gzip.compress(b"something else entirely\n"), "bad magic"),
    ("no-end-record", _payload(b"R\0\0\0\x03abc"), "truncated"),
    ("cut-in-a-record", _payload(b"R\0\0\0\x09abc"), "truncated"),
    ("cut-gzip", GOOD[:-9], "corrupt|truncated"),
    ("bad-crc", GOOD[:-8] + bytes(8), "corrupt"),
    ("unknown-tag", _payload(b"X"), "unknown tag"),
    ("total-mismatch", _payload(b"R\0\0\0\x03abc", b"E" + (4).to_bytes(8, "big") + DIGEST), "add up"),
    ("after-the-end", _payload(b"E" + bytes(8) + DIGEST, b"R"), "after its end"),
    ("empty-raw", _payload(b"R\0\0\0\0"), "raw record of 0"),
    ("empty-file", _payload(b"F" + bytes(8) + b"\0\0\0\x01a"), "file record"),
    ("absolute-path", _payload(b"F" + (1).to_bytes(8, "big") + b"\0\0\0\x02/a"), "bad path"),
    ("dotdot-path", _payload(b"F" + (1).to_bytes(8, "big") + b"\0\0\0\x04a/.."), "bad path"),
]


@pytest.mark.parametrize(("data", "message"), [row[1:] for row in DAMAGED], ids=[row[0] for row in DAMAGED])
def test_damaged_files_are_refused(data, message):
    import re

    with pytest.raises(ts.TarSplitError) as info:
        decode(data)
    assert re.search(message, info.value.message), info.value.message


def test_a_good_file_decodes():
    assert decode(GOOD) == [ts.Raw(b"abc"), ts.End(3, DIGEST)]


# -- recording while a tar is read ------------------------------------------


def record(tar: bytes, tmp_path: Path) -> tuple[Path, Path, str, Splitter]:
    """Read ``tar`` as the extractor does; its files' content under diff/, its tar-split beside."""
    diff, split = tmp_path / "diff", tmp_path / "tar-split.gz"
    diff.mkdir()
    splitter = Splitter(str(split))
    reader = TarReader(io.BytesIO(tar), splitter)
    for member in reader:
        parts = split_name(member.name)
        if member.isreg():
            path = diff.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as out:
                reader.copy_data(member, out, parts)
    diff_id = reader.finish()
    splitter.finish(reader.stream.position, reader.stream.digest())
    return diff, split, diff_id, splitter


BIG = os.urandom(3 * 1024 * 1024 + 7)
ENTRIES = [
    ("etc", "dir"),
    ("etc/passwd", "file", b"root:x:0:0::/root:/bin/sh\n"),
    ("etc/empty", "file", b""),
    ("etc/big", "file", BIG),
    ("etc/link", "hardlink", "etc/passwd"),
    ("etc/sym", "symlink", "passwd"),
    (f"{'d' * 90}/{'f' * 90}", "file", b"long name"),
    ("caf\udce9 with space\nand newline", "file", b"odd name"),
]
TARS = [
    ("pax", build_tar(ENTRIES, format="pax")),
    ("gnu", build_tar(ENTRIES, format="gnu")),
    ("ustar", build_tar(ENTRIES[:-2], format="ustar")),
    ("extra-zero-blocks", build_tar(ENTRIES) + bytes(10240 * 3)),
    ("whiteout-with-data", build_tar([Entry(".wh.gone", data=b"not stored as a file"), *ENTRIES])),
]


@pytest.mark.parametrize("tar", [row[1] for row in TARS], ids=[row[0] for row in TARS])
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_recorded_split_regenerates_the_tar(tar, compressed, tmp_path):
    source = gzip.compress(tar) if compressed else tar
    diff, split, diff_id, splitter = record(source, tmp_path)
    assert diff_id == "sha256:" + hashlib.sha256(tar).hexdigest() and not splitter.skipped
    with open(split, "rb") as f:
        refs = [r for r in ts.read_tar_split(f) if isinstance(r, ts.FileRef)]
    assert b"etc/big" in [r.path for r in refs] and b"etc/empty" not in [r.path for r in refs]
    assert split.stat().st_size < len(tar) // 20 + 1024
    out = io.BytesIO()
    assert write_original_tar(str(diff), str(split), out, diff_id) == diff_id
    assert out.getvalue() == tar


def test_a_replaced_file_gives_up_the_split(tmp_path):
    splitter = Splitter(str(tmp_path / "split"))
    splitter.feed(bytes(1024))
    splitter.add_file(512, 100, ("a", "b"))
    splitter.removed(("a",), True)
    assert "replaces 'a'" in splitter.skipped
    assert not splitter.finish(1024, DIGEST) and not (tmp_path / "split").exists()


def test_changed_files_are_found(tmp_path):
    diff, split, diff_id, _ = record(build_tar(ENTRIES), tmp_path)
    out = io.BytesIO()
    (diff / "etc/passwd").write_bytes(b"root:x:0:0::/root:/bin/bash\n")  # other size: before writing
    with pytest.raises(FilesChanged, match="etc/passwd"):
        write_original_tar(str(diff), str(split), out, diff_id)
    assert out.getvalue() == b""
    (diff / "etc/passwd").write_bytes(b"toor:x:0:0::/root:/bin/sh\n")  # same size: by the digest
    with pytest.raises(FilesChanged, match="hash"):
        write_original_tar(str(diff), str(split), out, diff_id)
    (diff / "etc/passwd").unlink()
    (diff / "etc/passwd").symlink_to("big")
    with pytest.raises(FilesChanged, match="cannot be opened"):
        write_original_tar(str(diff), str(split), io.BytesIO(), diff_id)
    (diff / "etc/passwd").unlink()
    (diff / "etc/passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    with pytest.raises(ArchiveError, match="not this layer"):
        write_original_tar(str(diff), str(split), io.BytesIO(), "sha256:" + "0" * 64)


def names(tar: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as reader:
        return reader.getnames()


def test_tarfile_agrees_the_regenerated_tar_is_the_same(tmp_path):
    tar = build_tar(ENTRIES, format="gnu")
    diff, split, diff_id, _ = record(tar, tmp_path)
    out = io.BytesIO()
    write_original_tar(str(diff), str(split), out, diff_id)
    assert names(out.getvalue()) == names(tar)
