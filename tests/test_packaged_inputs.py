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


def test_mtcnn_eval_holds_every_crop_but_the_calibration_ones():
    """mtcnn-rnet's 24 calibration crops are those of the 64-crop face / non-face alternation's even pairs (as
    before evaluation grew), and evaluation is every other crop built: none of the calibration ones, ~200."""
    xs, extra = inputs._mtcnn_crops(24, 21)
    calib, ev = inputs.build("mtcnn-rnet", "unused")
    c, e = calib["input_2"], ev["input_2"]
    assert c.shape[0] == 24 and e.shape[0] == len(xs) + len(extra) - 24 >= 200
    assert all((c[i] == xs[4 * (i // 2) + i % 2]).all() for i in range(24))
    flat_c = {x.tobytes() for x in c}
    assert not any(x.tobytes() in flat_c for x in e)
