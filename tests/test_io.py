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
