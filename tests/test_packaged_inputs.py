"""The packaged zoo's calibration / evaluation inputs are the same bytes on every build: the bench builds them afresh
in each run, the CLI reads the cached npz, and a quantizer choice on a knife edge (magika's) must not depend on
when the inputs were made. magika's file mix once held a zip whose member times were the build's clock."""
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("skimage")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models" / "packaged"))
import inputs  # noqa: E402


def test_magika_file_mix_does_not_depend_on_the_clock(tmp_path, monkeypatch):
    first = inputs.magika_files(tmp_path)
    later = time.time() + 86400 * 400  # another day and year: every zip / gzip / tar time field would differ
    monkeypatch.setattr(time, "time", lambda: later)
    second = inputs.magika_files(tmp_path)
    assert [(a, b) for a, b, _ in first] == [(a, b) for a, b, _ in second]
    changed = [(a, b) for (a, b, x), (_, _, y) in zip(first, second) if x != y]
    assert not changed
    assert any(label == "zip" for label, _, _ in first)
