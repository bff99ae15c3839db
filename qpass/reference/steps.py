"""How the reference interpreter calls one compiled step and stores its result (shared by every plan)."""
from __future__ import annotations

from operator import itemgetter
from typing import NoReturn

import numpy as np

from qpass.errors import QpassError


class GoldenError(QpassError):
    """The golden simulator cannot run the model or a node failed."""


def call(call, args, env: dict, label: str):
    """One step's raw result on the values of ``args`` in ``env``; a failure becomes one line naming the node."""
    try:
        return call(*[env[x] for x in args])
    except Exception as exc:  # noqa: BLE001 - one line naming the node
        fail(exc, args, env, label)


def fail(exc: Exception, args, env: dict, label: str) -> NoReturn:
    """Raise the error for a step that failed with ``exc``: an input without a value, a QpassError as it is,
    anything else as one line naming the node."""
    missing = next((x for x in args if x not in env), None)
    if missing is not None:
        raise GoldenError(f"{label}: input {missing!r} has no value") from None
    if isinstance(exc, QpassError):
        raise exc
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    raise GoldenError(f"{label} failed: {msg}") from exc


def store(out, outs: tuple, env: dict, cache: dict | None) -> None:
    """A step's result into ``env`` (and ``cache``): one array, or a list / tuple of one value per output."""
    if type(out) is np.ndarray:
        o = outs[0]
        if o:
            env[o] = out
            if cache is not None:
                cache[o] = out
        return
    for o, v in zip(outs, list(out) if isinstance(out, (tuple, list)) else [out]):
        if o:
            if type(v) is not np.ndarray:
                v = np.asarray(v)
            env[o] = v
            if cache is not None:
                cache[o] = v


def lean(compiled: list[tuple]) -> list[tuple]:
    """Compiled steps ``(call, args, outputs, cache kind, names to free, label)`` as ``run_live`` takes them: the
    argument names as one C-level getter on the environment (a tuple when ``many``), the first output apart."""
    return [(c[0], _getter(c[1]), len(c[1]) != 1, c[2][0] if c[2] else "", c[2], c[4], c[5], c[1])
            for c in compiled]


def _getter(args):
    return itemgetter(*args) if args else _no_args


def _no_args(env) -> tuple:
    return ()


def run_live(steps: list[tuple], env: dict) -> None:
    """Run ``lean`` steps on ``env`` (in place; "" maps to None), freeing intermediates after their last use
    (``call`` and ``store`` inlined: this loop runs every step of every iteration)."""
    for fn, get, many, first, outs, free, label, args in steps:
        try:
            out = fn(*get(env)) if many else fn(get(env))
        except Exception as exc:  # noqa: BLE001 - one line naming the node
            fail(exc, args, env, label)
        if type(out) is np.ndarray:
            if first:
                env[first] = out
        else:
            store(out, outs, env, None)
        for name in free:
            env.pop(name, None)


def same_value(a, b) -> bool:
    """``a`` and ``b`` hold the same bits (the same object, or numeric arrays of one dtype, shape and content)."""
    if a is b:
        return True
    if type(a) is not np.ndarray or type(b) is not np.ndarray or a.dtype != b.dtype or a.shape != b.shape \
            or a.dtype.hasobject:
        return False
    return a.tobytes() == b.tobytes()


class Repeated:
    """A (sub)graph called again and again on the same ``outer`` values (a Loop's or Scan's iterations).

    The first call runs every step (an If branch's only call: as any run) and keeps what depends only on
    constants and ``outer``. The second finds the formal inputs whose values did not change (a Loop's carried
    weights, passed through) and runs every step again with those counted as invariant, keeping what depends only
    on them (so do the next two calls if more inputs stopped changing). From then on each call checks that those
    inputs still hold the same bits as in the call before (else it starts over with the ones that do) and runs
    only the steps that read the others, on a copy of an environment holding everything else (no feed checks,
    plan lookups or cache probes per call). Invariant steps are pure: equal input bits give equal outputs."""

    def __init__(self, ex, inputs: list[str], outer: dict, outputs: tuple[str, ...]):
        self.ex, self.inputs, self.outer, self.outputs = ex, list(inputs), outer, outputs
        self.seen: list | None = None  # the previous call's values
        self.stable: tuple[int, ...] = ()  # positions of the formal inputs held invariant
        self.base: dict | None = None
        self.live: list[tuple] = []
        self.promote = 2  # calls after the second that may still add stable inputs
        self.outer_memo: dict = {}  # filled by the first call: values of steps that read only outer values
        self.verified: dict[int, tuple] = {}  # stable input position -> (value, previous value) found bit-equal

    def run(self, values) -> list:
        ex = self.ex
        values = [ex._fed(k, v) for k, v in zip(self.inputs, values)]
        seen, self.seen = self.seen, values
        if seen is None:  # as any run (an If branch's only call); what reads only outer values is kept
            res = ex.run(dict(zip(self.inputs, values)) | self.outer, list(self.outputs), self.outer_memo)
            return [res[o] for o in self.outputs]
        if self.base is None or self.promote > 0:  # the first calls: inputs that settle after an iteration or
            self.promote -= self.base is not None  # two join too (x + 0 turns -0.0 into 0.0 once)
            same = tuple(i for i, (a, b) in enumerate(zip(values, seen)) if same_value(a, b))
        else:
            same = tuple(i for i in self.stable if self._same(i, values[i], seen[i]))
        if self.base is None or same != self.stable:
            return self._start(values, same)
        for i in same:  # the same bits: keep the first object (kernels' caches keyed by identity hit)
            values[i] = seen[i]
        env = self.base.copy()
        env.update(zip(self.inputs, values))
        run_live(self.live, env)
        return [env[o] for o in self.outputs]

    def _same(self, i: int, a, b) -> bool:
        """``same_value(a, b)`` for stable input ``i``, remembering the last pair found equal (a value passed
        through by invariant steps comes back as the same new object every call: compared once, not per call)."""
        hit = self.verified.get(i)
        if hit is not None and hit[0] is a and hit[1] is b:
            return True
        if same_value(a, b):
            self.verified[i] = (a, b)
            return True
        return False

    def _start(self, values: list, stable: tuple[int, ...]) -> list:
        """Every step, with the formal inputs at positions ``stable`` counted as invariant: the environment later
        calls start from."""
        ex = self.ex
        memo = dict(self.outer_memo)  # values of the steps that read only constants and outer values, once
        self.stable = stable
        first, self.live = ex.repeat_plan(self.outputs, frozenset(self.inputs[i] for i in stable))
        feeds = dict(zip(self.inputs, values))
        feeds.update(self.outer)
        env = ex.start(feeds, first, memo)
        base = dict(ex.initializers)
        base.update(ex._const_cache)
        base.update(self.outer)
        base.update(memo)
        base[""] = None
        self.base = base
        return [env[o] for o in self.outputs]
