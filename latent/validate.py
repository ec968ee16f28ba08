"""The one validation layer: checks of user-given values with one message shape.

Every check raises :class:`latent.errors.InputError` with one line that names the option or
parameter, what it must be, the value given and what to do, in the house shape::

    The '--folds' option must be an integer from 1 to 1000. Got 0 instead. Use at least 1 fold.

``name`` is the option as the user typed it (``"--folds"``: "the '--folds' option"), a positional
argument in capitals (``"CACHE"``: "the CACHE argument") or a Python parameter (``"folds"``: "the
'folds' parameter"); ``of`` names the function whose parameter it is.
Each check returns the value (normalised where it says so), so a caller can write
``n = int_range("--folds", n, 1, MAX_FOLDS)``.

The limits of work that cannot finish (permutations, bootstrap resamples, folds, ...) are named
constants here, refused upfront rather than discovered after hours or when memory runs out.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

from latent.errors import InputError

__all__ = [
    "MAX_PERMUTATIONS",
    "MAX_BOOTSTRAP",
    "MAX_FOLDS",
    "MAX_BATCH_SIZE",
    "MAX_WORKERS",
    "MAX_PER_SPECIES",
    "MAX_DIM",
    "MAX_SYNTH_VALUES",
    "MAX_SEED",
    "DEVICE_FORMS",
    "subject",
    "choice",
    "int_range",
    "number_range",
    "positive",
    "non_negative",
    "nonempty",
    "device",
    "probe_settings",
]

#: Permutations of one null (``--permutations``, ``--verdict-permutations``). Each permutation
#: recomputes the statistic and the null samples are kept in memory: above this the p-value's
#: resolution (1 / (N + 1)) gains nothing a report can use while the run takes days.
MAX_PERMUTATIONS = 100_000
#: Bootstrap resamples of one confidence interval (``--bootstrap``, ``n_boot`` settings); a 95% CI
#: is stable to the third digit long before this.
MAX_BOOTSTRAP = 100_000
#: Seeded folds of the k-shot evaluation (``--folds``): each fold refits every rank.
MAX_FOLDS = 1_000
#: Images per forward pass (``--batch-size``): larger batches only exhaust GPU or host memory.
MAX_BATCH_SIZE = 65_536
#: Image-decoding processes (``--workers``).
MAX_WORKERS = 256
#: Synthetic images per species (``latent synth --per-species``).
MAX_PER_SPECIES = 100_000
#: Embedding dimension of synthetic data (``latent synth --dim``).
MAX_DIM = 65_536
#: Values (species x images x dimension) of one synthetic data set: 2 billion are a cache of 8 GB in float32
#: (4 GB in float16); ``latent synth`` streams them in blocks, so memory does not grow with them.
MAX_SYNTH_VALUES = 2_000_000_000
#: Seeds are numpy seeds: integers in [0, 2**63).
MAX_SEED = 2**63 - 1

#: What a device may be called.
DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def subject(name: str, of: "str | None" = None) -> str:
    """``"The '--x' option"``, ``"The CACHE argument"`` or ``"The 'x' parameter of f"``: how a message
    names what was given."""
    if name.startswith("-"):
        return f"The {name!r} option"
    if name.isupper():
        return f"The {name} argument"
    return f"The {name!r} parameter" + (f" of {of}" if of else "")


def _fail(name: str, expected: str, value: Any, hint: str = "", of: "str | None" = None) -> InputError:
    message = f"{subject(name, of)} must be {expected}. Got {value!r} instead."
    return InputError(f"{message} {hint}".strip())


def _is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def choice(name: str, value: Any, allowed: Iterable[Any], *, hint: str = "", of: "str | None" = None) -> Any:
    """``value`` if it is one of ``allowed`` (compared as given), else InputError listing them."""
    allowed = list(allowed)
    if value not in allowed:
        raise _fail(name, "one of " + ", ".join(map(str, allowed)), value, hint, of)
    return value


def int_range(name: str, value: Any, low: "int | None" = None, high: "int | None" = None, *,
              hint: str = "", of: "str | None" = None) -> int:
    """``int(value)`` if it is an integer (not a bool) in ``[low, high]`` (a None bound is open).

    Above ``high`` the message names the limit; ``hint`` says what to do (e.g. why the limit exists).
    """
    if low is not None and high is not None:
        expected = f"an integer from {low:,} to {high:,}"
    elif low is not None:
        expected = f"an integer >= {low:,}"
    elif high is not None:
        expected = f"an integer <= {high:,}"
    else:
        expected = "an integer"
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise _fail(name, expected, value, hint, of)
    return int(value)


def number_range(name: str, value: Any, low: "float | None" = None, high: "float | None" = None, *,
                 low_open: bool = False, high_open: bool = False, hint: str = "", of: "str | None" = None) -> float:
    """``float(value)`` if it is a finite real number (not a bool) within the bounds.

    ``low_open`` / ``high_open`` exclude the bound itself: ``number_range("--test-fraction", f, 0, 1,
    low_open=True, high_open=True)`` accepts (0, 1).
    """
    if low is not None and high is not None:
        expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        expected = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        expected = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        expected = "a finite number"
    ok = not isinstance(value, bool)
    if ok:
        try:
            number = float(value)
        except (TypeError, ValueError):
            ok = False
    if ok and not math.isfinite(number):
        ok = False
    if ok and low is not None and (number <= low if low_open else number < low):
        ok = False
    if ok and high is not None and (number >= high if high_open else number > high):
        ok = False
    if not ok:
        raise _fail(name, expected, value, hint, of)
    return number


def positive(name: str, value: Any, *, hint: str = "", of: "str | None" = None) -> float:
    """``float(value)`` if it is a finite number > 0."""
    return number_range(name, value, 0, None, low_open=True, hint=hint, of=of)


def non_negative(name: str, value: Any, *, hint: str = "", of: "str | None" = None) -> float:
    """``float(value)`` if it is a finite number >= 0."""
    return number_range(name, value, 0, None, hint=hint, of=of)


def nonempty(name: str, value: Any, *, what: str = "a path", hint: str = "", of: "str | None" = None) -> str:
    """``value`` if it is a string with something other than spaces (an empty ``--out`` would be '.')."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(name, f"{what} (not empty)", value, hint, of)
    return value


def device(name: str, value: Any, *, of: "str | None" = None) -> str:
    """The device called ``value``, normalised (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``).

    ``auto`` and ``cpu`` are accepted without importing torch. ``cuda``, ``cuda:N`` and ``mps`` are
    checked against what torch sees on this machine, so a GPU that does not exist is refused here
    rather than silently unused (a kNN evaluation never touches the device) or failing mid-run.
    :func:`latent.devices.resolve_device` uses this check; it is the one place devices are validated.
    """
    option = name.startswith("-")
    use = (f"Use {name} auto (CUDA when present, else CPU) or {name} cpu." if option
           else "Use 'auto' (CUDA when present, else CPU) or 'cpu'.")
    text = value.strip().lower() if isinstance(value, str) else None
    if text is None or not _DEVICE.match(text):
        raise _fail(name, f"one of {DEVICE_FORMS}", value, use, of)
    if text in ("auto", "cpu"):
        return text
    import torch

    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise _fail(name, "a device that exists (torch sees no CUDA GPU here)", value, use, of)
        count = torch.cuda.device_count()
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= count:
            seen = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise _fail(name, f"a CUDA device that exists (torch sees {count}: {seen})", value, use, of)
    elif text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise _fail(name, "a device that exists (torch sees no Apple MPS device here)", value, use, of)
    return text


def probe_settings(extra: Any, *, name: str = "extra", of: "str | None" = None) -> dict[str, dict[str, Any]]:
    """Per-probe settings ``{probe: {setting: value}}``, every probe and setting name checked.

    The names come from the registry (:data:`latent.probes.PROBES`, ``ProbeSpec.settings``). An
    unknown probe or setting raises InputError listing the valid ones, so a misspelled
    ``--set dendrogram.methd=ward`` or YAML ``probe.settings`` key is refused instead of running the
    default. Values are checked by the probe that reads them, except the upfront limits:
    ``permutations`` above :data:`MAX_PERMUTATIONS` and ``n_boot*`` above :data:`MAX_BOOTSTRAP`.
    """
    from latent.probes import PROBES  # lazy: latent.probes imports latent.probes.base, which calls us

    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise _fail(name, "a mapping of probe name to settings, e.g. {'dendrogram': {'method': 'ward'}}", extra,
                    of=of)
    out: dict[str, dict[str, Any]] = {}
    for probe, settings in extra.items():
        if probe not in PROBES:
            raise InputError(f"Settings were given for unknown probe {probe!r}; probes: {', '.join(PROBES)} "
                             f"(see `latent probe --list`).")
        if settings is None:
            settings = {}
        if not isinstance(settings, Mapping):
            raise InputError(f"The settings of probe {probe!r} must be a mapping of setting name to value "
                             f"(e.g. --set {probe}.NAME=VALUE). Got {settings!r} instead.")
        known = PROBES[probe].settings
        for key in settings:
            if key not in known:
                raise InputError(f"Unknown setting {key!r} for probe {probe!r}; its settings: "
                                 f"{', '.join(known) or 'none'}.")
            value = settings[key]
            limit = MAX_PERMUTATIONS if key == "permutations" else MAX_BOOTSTRAP if key.startswith("n_boot") else None
            if limit is not None and _is_int(value) and value > limit:
                raise InputError(f"The {key!r} setting of probe {probe!r} must be at most {limit:,}. Got {value!r} "
                                 f"instead. Above that the run takes days and gains nothing; use fewer.")
        out[str(probe)] = dict(settings)
    return out
