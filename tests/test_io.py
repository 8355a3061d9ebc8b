import os

import pytest

from babysit._io import write_atomic


def test_write_atomic_replaces_whole_files_and_creates_folders(tmp_path):
    path = write_atomic(tmp_path / "a" / "b.json", "first")
    assert path.read_text() == "first"
    write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.json"]  # no temporaries


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_atomic(tmp_path / "r.json", "good")

    class Boom(str):
        def encode(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, Boom("bad"))
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_json_writes_strict_json_whole(tmp_path):
    import json
    import math

    import numpy as np
    import torch

    from babysit._io import write_json

    path = write_json(
        tmp_path / "out" / "r.json",
        {"nan": math.nan, "inf": [math.inf, 1.5], "t": torch.tensor([1.0, 2.0]), 3: np.int64(4)},
    )
    text = path.read_text()
    assert text.endswith("\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": [None, 1.5], "t": [1.0, 2.0], "3": 4}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left


def test_write_jsonl_writes_one_compact_line_per_record_as_json_dumps_does(tmp_path):
    import json

    from babysit._io import write_jsonl

    records = [{"step": 1, "loss": 2.5, "layers": {"fc1": {"std": None}}}, {"step": 2, "x": [1]}]
    path = write_jsonl(tmp_path / "h.jsonl", iter(records))
    expected = "".join(json.dumps(r) + "\n" for r in records)  # json's default separators
    assert path.read_text() == expected
    assert [json.loads(line) for line in path.read_text().splitlines()] == records


def test_write_jsonl_refuses_a_nan_and_keeps_the_old_file(tmp_path):
    import math

    from babysit._io import write_jsonl

    path = write_jsonl(tmp_path / "h.jsonl", [{"step": 1}])
    with pytest.raises(ValueError):
        write_jsonl(path, [{"step": 1}, {"step": 2, "loss": math.nan}])
    assert path.read_text() == '{"step": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["h.jsonl"]
