"""JSONL interchange: clear errors, flushed appends, torn-tail repair, atomic final files."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from coderl.io import JsonlAppender, RecordError, atomic_write_text, read_jsonl, write_jsonl


def test_roundtrip_plain_and_gzip(tmp_path):
    recs = [{"a": 1, "s": "é"}, {"a": 2}]
    write_jsonl(tmp_path / "x.jsonl", recs)
    assert list(read_jsonl(tmp_path / "x.jsonl")) == recs
    with gzip.open(tmp_path / "x.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    assert list(read_jsonl(tmp_path / "x.jsonl.gz")) == recs


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n\n{"a": \n{"a": 3}\n')
    with pytest.raises(RecordError, match=r"bad\.jsonl:3: malformed JSON"):
        list(read_jsonl(p))
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: expected a JSON object, got list"):
        list(read_jsonl(p))
    p.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(RecordError, match=r"bad\.jsonl: not valid UTF-8"):
        list(read_jsonl(p))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        list(read_jsonl(tmp_path / "nope.jsonl"))


def test_appender_repairs_a_torn_tail_from_a_killed_run(tmp_path):
    p = tmp_path / "samples.jsonl"
    with JsonlAppender(p) as w:
        w.write({"i": 0})
        w.write_many([{"i": 1}, {"i": 2}])
    with open(p, "a") as f:
        f.write('{"i": 3, "trunc')  # the process died mid-line
    assert [r["i"] for r in read_jsonl(p, tolerate_torn_tail=True)] == [0, 1, 2]
    with pytest.raises(RecordError):
        list(read_jsonl(p))
    with JsonlAppender(p) as w:  # resuming cuts the torn line and continues
        w.write({"i": 3})
    assert [r["i"] for r in read_jsonl(p)] == [0, 1, 2, 3]


def test_atomic_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    p = tmp_path / "report.json"
    atomic_write_text(p, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["report.json"]  # no temp file left behind
