"""One reader and one writer per record type: validation, duplicates, locked writers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coderl.io import RecordError
from coderl.records import read_results, read_samples, result_writer, sample_writer


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_duplicate_results_are_rejected_naming_both_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = {"problem_id": "a", "index": 0, "outcome": "passed"}
    _write(path, [rec, {"problem_id": "a", "index": 1, "outcome": "failed"}, rec])
    with pytest.raises(RecordError, match=r"r.jsonl:3: duplicate record .*'a', index=0.*line 1"):
        read_results(path)


def test_duplicate_samples_are_rejected(tmp_path):
    path = tmp_path / "s.jsonl"
    rec = {"problem_id": "a", "index": 0, "program": "x"}
    _write(path, [rec, rec])
    with pytest.raises(RecordError, match=r"s.jsonl:2: duplicate record"):
        read_samples(path)


@pytest.mark.parametrize("rec, message", [
    ({"problem_id": "a", "outcome": "passed"}, "no 'index' field"),
    ({"problem_id": "a", "index": "0", "outcome": "passed"}, "'index' must be int"),
    ({"problem_id": "a", "index": 0, "outcome": "maybe"}, "unknown outcome 'maybe'"),
    ({"problem_id": "zzz", "index": 0, "outcome": "passed"}, "unknown problem_id 'zzz'"),
])
def test_bad_results_name_file_and_line(tmp_path, rec, message):
    path = tmp_path / "r.jsonl"
    _write(path, [{"problem_id": "a", "index": 5, "outcome": "passed"}, rec])
    with pytest.raises(RecordError, match=rf"r.jsonl:2: .*{message}"):
        read_results(path, problems={"a"})


def test_torn_tail_is_tolerated_only_on_resume(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"problem_id": "a", "index": 0, "program": "x"}\n{"problem_id": "a", "ind')
    assert len(read_samples(path, resume=True)) == 1
    with pytest.raises(RecordError, match="s.jsonl:2: malformed JSON"):
        read_samples(path)


def test_a_second_writer_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    with result_writer(path) as w:
        w.write({"problem_id": "a", "index": 0, "outcome": "passed"})
        code = ("import sys; from coderl.records import result_writer\n"
                "try:\n    result_writer(sys.argv[1])\nexcept Exception as e:\n    print(e); sys.exit(3)\n")
        p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
        assert p.returncode == 3 and "another coderl process is writing" in p.stdout
    with sample_writer(tmp_path / "s.jsonl"):
        pass
    with result_writer(path) as w:  # free again once the first writer closed
        w.write({"problem_id": "a", "index": 1, "outcome": "failed"})
    assert [r["index"] for r in read_results(path)] == [0, 1]


def test_a_directory_is_not_a_records_file(tmp_path):
    with pytest.raises(RecordError, match="is a directory"):
        read_results(tmp_path)
    with pytest.raises(RecordError, match="is a directory"):
        result_writer(tmp_path)


def test_negative_indices_are_rejected(tmp_path):
    path = tmp_path / "s.jsonl"
    _write(path, [{"problem_id": "a", "index": -1, "program": "x"}])
    with pytest.raises(RecordError, match="index must be >= 0"):
        read_samples(path)


def test_join_refuses_results_of_other_programs(tmp_path):
    """A result carries the hash of the program it ran: joined to a sample whose program is
    another (samples regenerated, another run's results), it is an error naming the line, not a
    verdict of the wrong program (a `return None` labelled passed, reward +1)."""
    from coderl.records import join, program_hash

    s, r = tmp_path / "s.jsonl", tmp_path / "r.jsonl"
    _write(s, [{"problem_id": "a", "index": 0, "program": "def f():\n    return None\n"},
               {"problem_id": "a", "index": 1, "program": "def f():\n    return 1\n"}])
    good = {"problem_id": "a", "index": 1, "outcome": "passed",
            "program_hash": program_hash("def f():\n    return 1\n")}
    _write(r, [good, {"problem_id": "a", "index": 0, "outcome": "passed",
                      "program_hash": program_hash("def f():\n    return 1\n")}])
    with pytest.raises(RecordError, match=r"r.jsonl:2: .*another program"):
        join(s, r)
    _write(r, [good, {"problem_id": "a", "index": 0, "outcome": "passed"}])
    with pytest.raises(RecordError, match=r"r.jsonl:2: .*does not name the program"):
        join(s, r)
    _write(r, [good])
    assert [(x.index, y and y["outcome"]) for x, y in join(s, r, require_results=False)] == [(0, None), (1, "passed")]
    with pytest.raises(RecordError, match=r"s.jsonl:1: .*has no result"):
        join(s, r)
