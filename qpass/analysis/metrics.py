"""Fidelity metrics: output SQNR against the float model and top-1 accuracy / agreement."""
from __future__ import annotations

import numpy as np


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - test)^2); +inf when identical."""
    ref = np.asarray(ref, np.float64)
    err = ref - np.asarray(test, np.float64)
    noise = float(np.sum(err * err))
    signal = float(np.sum(ref * ref))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def top1(logits: np.ndarray) -> np.ndarray:
    """Class index per sample for outputs stacked as (N, [1,] classes)."""
    x = np.asarray(logits)
    return x.reshape(x.shape[0], -1).argmax(axis=1)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(top1(logits) == np.asarray(labels).reshape(-1)))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(top1(a) == top1(b)))
