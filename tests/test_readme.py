"""The README's first-hour promises (issue 20): the venv step, what the tests download and how to run them offline,
the memory they need, and figures that are what its commands print, each naming the bench script behind it."""
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_the_first_steps_make_a_venv_and_say_what_the_tests_download_and_need():
    fresh = " ".join(README.split("## Fresh machine", 1)[1].split("\n## ", 1)[0].split())
    assert "python -m venv .venv && . .venv/bin/activate" in fresh
    assert fresh.index("python -m venv") < fresh.index("pip install -e .")
    assert "QPASS_FETCH_ZOO=0 python -m pytest" in fresh
    assert re.search(r"\d+ MB of PyPI archives", fresh) and re.search(r"peaks at [\d.]+ GB of memory", fresh)
    assert (ROOT / "bench" / "readme_numbers.py").is_file()
    figures = list(re.finditer(r"\d+(?:\.\d+)?%|\d+(?:\.\d+)? (?:MB|GB|minutes)", fresh))
    assert len(figures) >= 5
    for m in figures:  # each figure names the script that measured it, within the next sentence or two
        assert "bench/readme_numbers.py" in fresh[m.start():m.start() + 250], m.group()


def _readme_command(prefix: str) -> list[str]:
    line = next(x for x in README.splitlines() if x.startswith(prefix))
    return shlex.split(line.split("#")[0])[1:]  # without "qpass"


@pytest.mark.parametrize("prefix,sentence", [
    ("qpass optimize models/digits_cnn.onnx -o out/ --bits auto --target",
     "at {quant}% accuracy, the float model's {float}% ({agree}% top-1 agreement with it)"),
    ("pip install -e . && qpass optimize", "prints `accuracy: float {float}% quantized {quant}%`"),
])
def test_readme_figures_are_what_the_commands_print(tmp_path, prefix, sentence):
    args = _readme_command(prefix) if not prefix.startswith("pip") else \
        shlex.split(next(x for x in README.splitlines() if x.startswith(prefix)).split("&& ", 1)[1])[1:]
    args = [str(tmp_path) + "/" if a == "out/" else a for a in args]
    r = subprocess.run([sys.executable, "-m", "qpass.cli", *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    acc = re.search(r"accuracy: float ([\d.]+)%\s+quantized ([\d.]+)%", r.stdout)
    agree = re.search(r"top-1 agreement with float: ([\d.]+)%", r.stdout)
    expected = sentence.format(float=acc.group(1), quant=acc.group(2), agree=agree.group(1))
    assert expected in " ".join(README.split()), expected
