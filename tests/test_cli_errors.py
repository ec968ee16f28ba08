"""Bad input at the command line: one line naming the option or path, the right exit code, never a
traceback, and nothing written or overwritten.

Most cases call ``latent.cli.main`` in-process (fast); the cases that are about the process itself
(a closed pipe, Ctrl-C, file-size and memory limits, the device flag as users type it) run the real
``python -m latent.cli`` in a subprocess. The property test at the end throws seeded random bad
values at every subcommand.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from latent import validate
from latent.cli import build_parser, main, run_command
from latent.errors import InputError
from latent.synthetic import builtin_taxonomy_path

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


# ---------------------------------------------------------------------------- helpers
def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr); argparse's SystemExit becomes its code."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def latent(*args: object, cwd: "Path | None" = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latent.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=600)


def one_error_line(err: str, command: str) -> str:
    """The single line of ``err``, checked to be ``latent COMMAND: error: ...`` and not a traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"latent {command}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A small synthetic cache (47 species x 3 images, 8-d)."""
    path = tmp_path_factory.mktemp("caches") / "s.h5"
    proc = latent("synth", "--out", path, "--per-species", 3, "--dim", 8)
    assert proc.returncode == 0, proc.stderr
    return path


# ---------------------------------------------------------------------------- the validation layer
def test_validate_helpers_name_the_value_and_what_to_do():
    with pytest.raises(InputError, match=r"^The '--folds' option must be an integer from 1 to 1,000\. "
                                         r"Got 0 instead\. Use 5\.$"):
        validate.int_range("--folds", 0, 1, 1000, hint="Use 5.")
    with pytest.raises(InputError, match=r"^The 'k' parameter of f must be an integer >= 1\. Got True instead\.$"):
        validate.int_range("k", True, 1, of="f")
    assert validate.int_range("k", np.int64(3), 1) == 3
    with pytest.raises(InputError, match=r"The '--test-fraction' option must be a number in \(0, 1\)\. Got 1\.5"):
        validate.number_range("--test-fraction", 1.5, 0, 1, low_open=True, high_open=True)
    for bad in (float("nan"), float("inf"), "x", None):
        with pytest.raises(InputError, match="'--temperature' option must be a finite number > 0"):
            validate.positive("--temperature", bad)
    assert validate.non_negative("x", 0) == 0.0
    with pytest.raises(InputError, match=r"^The '--split' option must be one of a, b\. Got 'c' instead\.$"):
        validate.choice("--split", "c", ["a", "b"])
    with pytest.raises(InputError, match=r"^The CACHE argument must be a path \(not empty\)\. Got '' instead\.$"):
        validate.nonempty("CACHE", "")


def test_device_is_checked_in_one_place():
    from latent.devices import resolve_device

    assert validate.device("--device", " CPU ") == "cpu" and validate.device("--device", "auto") == "auto"
    msg = (r"^The '--device' option must be one of auto, cpu, cuda, cuda:N \(N = 0, 1, \.\.\.\) or mps\. "
           r"Got 'banana' instead\. Use --device auto .* or --device cpu\.$")
    with pytest.raises(InputError, match=msg):
        validate.device("--device", "banana")
    # the library's resolve_device says the same about its parameter
    with pytest.raises(InputError, match=r"^The 'device' parameter of load_model must be one of auto, cpu, cuda"):
        resolve_device("banana", function="load_model")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for where in (lambda d: validate.device("--device", d), lambda d: resolve_device(d)):
        with pytest.raises(InputError, match="must be a .*device that exists"):
            where(f"cuda:{count + 7}")
        if count == 0:
            with pytest.raises(InputError, match="torch sees no CUDA GPU here"):
                where("cuda")


# ---------------------------------------------------------------------------- numbers and choices
#: (argv after the command, option named in the message). Each is refused before any work.
BAD_OPTIONS = [
    (["evaluate", "{cache}", "--method", "centroid", "--out", "{out}", "--folds", "0"], "--folds"),
    (["evaluate", "{cache}", "--method", "centroid", "--out", "{out}", "--folds", "5000"], "--folds"),
    (["evaluate", "{cache}", "--method", "centroid", "--out", "{out}", "--shots", "0"], "--shots"),
    (["evaluate", "{cache}", "--method", "knn", "--out", "{out}", "--k", "0"], "--k"),
    (["evaluate", "{cache}", "--method", "knn", "--out", "{out}", "--test-fraction", "1.5"], "--test-fraction"),
    (["evaluate", "{cache}", "--method", "knn", "--out", "{out}", "--test-fraction", "nan"], "--test-fraction"),
    (["evaluate", "{cache}", "--method", "knn", "--out", "{out}", "--bootstrap", "-1"], "--bootstrap"),
    (["evaluate", "{cache}", "--method", "knn", "--out", "{out}", "--temperature", "0"], "--temperature"),
    (["evaluate", "{cache}", "--method", "knn", "--out", "{out}", "--seed", "-1"], "--seed"),
    (["evaluate", "{cache}", "--method", "knn", "--out", "{out}", "--clade", "genus"], "clade"),
    (["probe", "{cache}", "--out", "{out}", "--permutations", "-1"], "--permutations"),
    (["probe", "{cache}", "--out", "{out}", "--permutations", "100001"], "--permutations"),
    (["probe", "{cache}", "--out", "{out}", "--max-images", "1"], "--max-images"),
    (["probe", "{cache}", "--out", "{out}", "--max-pairs", "0"], "--max-pairs"),
    (["probe", "{cache}", "--out", "{out}", "--probes", "nosuch"], "probes"),
    (["report", "{cache}", "--out", "{out}", "--verdict-permutations", "100001"], "--verdict-permutations"),
    (["report", "{cache}", "--out", "{out}", "--permutations", "1000000000"], "--permutations"),
    (["report", "{cache}", "--out", "{out}", "--bootstrap", "-1"], "--bootstrap"),
    (["report", "{cache}", "--out", "{out}", "--evaluate", "linear:sideways"], "--evaluate"),
    (["report", "{cache}", "--out", "{out}", "--evaluate", "guess:random"], "--evaluate"),
    (["report", "{cache}", "--out", "{out}", "--projections", "tsne"], "--projections"),
    (["embed", "{cache}", "--out", "{out}/e.h5", "--batch-size", "0"], "--batch-size"),
    (["embed", "{cache}", "--out", "{out}/e.h5", "--commit-every", "0"], "--commit-every"),
    (["embed", "{cache}", "--out", "{out}/e.h5", "--workers", "-1"], "--workers"),
    (["embed-text", "{cache}", "--batch-size", "0"], "--batch-size"),
    (["synth", "--out", "{out}/q.h5", "--per-species", "0"], "--per-species"),
    (["synth", "--out", "{out}/q.h5", "--dim", "0"], "--dim"),
    (["synth", "--out", "{out}/q.h5", "--signal", "-1"], "--signal"),
    (["synth", "--out", "{out}/q.h5", "--per-species", "100000", "--dim", "1000"], "--per-species"),
]


@pytest.mark.parametrize("argv, option", BAD_OPTIONS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_OPTIONS])
def test_bad_numbers_and_choices_are_refused_before_any_work(argv, option, cache, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.format(cache=cache, out=out) for a in argv]
    before = cache.stat().st_mtime_ns
    code, stdout, err = run_main(argv, capsys)
    line = one_error_line(err, argv[0])
    assert code == 2 and stdout == ""
    assert option in line, line
    assert not out.exists()  # nothing was written
    assert cache.stat().st_mtime_ns == before


def test_internal_messages_are_not_shown_for_folds_and_batch_size(cache, tmp_path, capsys):
    """The issue's examples: '--folds 0' said "No objects to concatenate", '--batch-size 0' "range() arg 3"."""
    _, _, err = run_main(["evaluate", cache, "--method", "centroid", "--folds", "0", "--out", tmp_path / "o"], capsys)
    assert "No objects to concatenate" not in err and "Use e.g. 5 seeded folds" in err
    _, _, err = run_main(["embed", cache, "--out", tmp_path / "e.h5", "--batch-size", "0"], capsys)
    assert "range()" not in err and "The '--batch-size' option must be an integer from 1" in err


def test_permutation_limit_is_named_and_explained(cache, tmp_path, capsys):
    code, _, err = run_main(["probe", cache, "--out", tmp_path / "p", "--permutations", "1000000000"], capsys)
    line = one_error_line(err, "probe")
    assert code == 2 and f"{validate.MAX_PERMUTATIONS:,}" in line and "p-value resolution" in line
    # the same limit holds in Python, and for the probes' own permutations settings
    from latent.probes.base import ProbeOptions

    with pytest.raises(InputError, match="'permutations' parameter of ProbeOptions must be an integer from 0 to "
                                         "100,000"):
        ProbeOptions(permutations=validate.MAX_PERMUTATIONS + 1)
    with pytest.raises(InputError, match="'permutations' setting of probe 'levels' must be at most 100,000"):
        ProbeOptions(extra={"levels": {"permutations": 10**9}})
    ProbeOptions(permutations=validate.MAX_PERMUTATIONS)  # the limit itself is allowed


def test_device_banana_is_refused_by_the_real_command(cache, tmp_path):
    """`latent evaluate --device banana` ran kNN and exited 0; now it is refused before any work."""
    proc = latent("evaluate", cache, "--method", "knn", "--out", tmp_path / "ev", "--device", "banana")
    line = one_error_line(proc.stderr, "evaluate")
    assert proc.returncode == 2 and "'--device'" in line and "'banana'" in line and "--device cpu" in line
    assert not (tmp_path / "ev").exists()


def test_device_that_does_not_exist_is_refused(cache, tmp_path, capsys):
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    code, _, err = run_main(["probe", cache, "--out", tmp_path / "p", "--device", f"cuda:{count + 7}"], capsys)
    line = one_error_line(err, "probe")
    assert code == 2 and f"cuda:{count + 7}" in line and "exists" in line
    assert not (tmp_path / "p").exists()


# ---------------------------------------------------------------------------- probe settings
def test_probe_settings_registry_matches_what_the_probes_read():
    """Every declared setting is read by its probe's module (a renamed setting fails here), and the
    probes that keep a defaults table declare exactly its keys."""
    import importlib

    from latent.probes import PROBES
    from latent.probes.hyperbolic import HYPERBOLIC_FIT_DEFAULTS, HYPERBOLICITY_DEFAULTS
    from latent.probes.levels import DEFAULTS as LEVELS_DEFAULTS

    for name, spec in PROBES.items():
        assert spec.settings, name
        source = Path(importlib.import_module(spec.target.split(":")[0]).__file__).read_text()
        for setting in spec.settings:
            assert f'"{setting}"' in source or f"'{setting}'" in source, (name, setting)
    assert set(PROBES["levels"].settings) == set(LEVELS_DEFAULTS)
    assert set(PROBES["hyperbolicity"].settings) == set(HYPERBOLICITY_DEFAULTS)
    assert set(PROBES["hyperbolic_fit"].settings) == set(HYPERBOLIC_FIT_DEFAULTS)


def test_unknown_probe_settings_are_refused_in_python():
    from latent.probes.base import ProbeOptions

    with pytest.raises(InputError, match=r"^Unknown setting 'methd' for probe 'dendrogram'; its settings: method, "
                                         r"n_boot\.$"):
        ProbeOptions(extra={"dendrogram": {"methd": "ward"}})
    with pytest.raises(InputError, match=r"Unknown setting 'nosuch' for probe 'clusters'; its settings: permutations"):
        ProbeOptions(extra={"clusters": {"nosuch": 1}})
    with pytest.raises(InputError, match=r"unknown probe 'dendrogam'; probes: levels, distances, .*dendrogram"):
        ProbeOptions(extra={"dendrogam": {"method": "ward"}})
    assert ProbeOptions(extra={"dendrogram": {"method": "ward"}}).for_probe("dendrogram") == {"method": "ward"}


@pytest.mark.parametrize("setting, expected", [
    ("dendrogram.methd=ward", "Unknown setting 'methd' for probe 'dendrogram'; its settings: method, n_boot."),
    ("clusters.nosuch=1", "Unknown setting 'nosuch' for probe 'clusters'; its settings: permutations, n_boot, "
                          "n_boot_expensive."),
    ("nosuch.x=1", "Settings were given for unknown probe 'nosuch'"),
    ("dendrogram", "The '--set' option must look like PROBE.SETTING=VALUE"),
])
@pytest.mark.parametrize("command", ["probe", "report"])
def test_unknown_probe_settings_are_refused_at_the_command_line(command, setting, expected, cache, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_main([command, cache, "--out", out, "--set", setting], capsys)
    assert code == 2 and expected in one_error_line(err, command)
    assert not out.exists()


# ---------------------------------------------------------------------------- paths
@pytest.mark.parametrize("command", ["evaluate", "probe", "report", "demo", "run"])
def test_out_that_is_a_file_is_refused_and_kept(command, cache, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("precious\n")
    argv = {
        "evaluate": ["evaluate", cache, "--method", "knn", "--out", target],
        "probe": ["probe", cache, "--out", target],
        "report": ["report", cache, "--out", target],
        "demo": ["demo", "--out", target],
        "run": ["run", REPO / "experiments" / "synthetic_signal.yaml", "--results", target],
    }[command]
    code, _, err = run_main(argv, capsys)
    line = one_error_line(err, command)
    option = "--results" if command == "run" else "--out"
    assert code == 2 and f"'{option}' option must be a folder" in line and str(target) in line
    assert target.read_text() == "precious\n"


@pytest.mark.parametrize("command", ["import", "synth", "embed"])
def test_cache_out_that_is_a_folder_is_refused(command, cache, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    np.save(tmp_path / "e.npy", np.zeros((3, 4), np.float32))
    argv = {"import": ["import", tmp_path / "e.npy", "--out", folder], "synth": ["synth", "--out", folder],
            "embed": ["embed", tmp_path, "--out", folder]}[command]
    code, _, err = run_main(argv, capsys)
    line = one_error_line(err, command)
    assert code == 2 and "'--out' option must be a file path" in line and str(folder) in line
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


def test_empty_paths_are_refused(cache, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["evaluate", cache, "--method", "knn", "--out", ""], capsys)
    line = one_error_line(err, "evaluate")
    assert code == 2 and "The '--out' option must be a path (not empty). Got '' instead." in line
    code, _, err = run_main(["info", " "], capsys)
    assert code == 2 and "The CACHE argument must be a path" in one_error_line(err, "info")
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file modes")
def test_read_only_folder_is_one_line(cache, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = run_main(["evaluate", cache, "--method", "knn", "--out", ro / "ev"], capsys)
    finally:
        ro.chmod(0o755)
    line = one_error_line(err, "evaluate")
    assert code == 1 and "permission denied" in line and str(ro / "ev") in line
    assert list(ro.iterdir()) == []


def test_permission_denied_even_for_root_is_one_line(cache, capsys):
    """/sys refuses new folders to everyone, root included (the mode test above skips as root)."""
    target = Path("/sys/latent-test-out")
    try:
        target.mkdir()
    except PermissionError:
        pass
    except OSError as exc:  # pragma: no cover
        pytest.skip(f"/sys is not the sysfs here: {exc}")
    else:  # pragma: no cover - a system where /sys is writable
        target.rmdir()
        pytest.skip("/sys accepts new folders here")
    code, _, err = run_main(["evaluate", cache, "--method", "knn", "--out", target], capsys)
    line = one_error_line(err, "evaluate")
    assert code == 1 and "permission denied: /sys/latent-test-out" in line and "choose a path you can write to" in line


@pytest.mark.parametrize("command", ["evaluate", "probe", "synth"])
def test_out_below_a_file_is_refused_before_any_work(command, cache, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "sub"
    argv = {"evaluate": ["evaluate", cache, "--method", "knn", "--out", target],
            "probe": ["probe", cache, "--out", target, "--probes", "distances"],
            "synth": ["synth", "--out", target / "s.h5"]}[command]
    code, _, err = run_main(argv, capsys)
    line = one_error_line(err, command)
    assert code == 2 and f"The '--out' option must be a path below a folder, but {tmp_path / 'afile'} is a file" in line
    assert (tmp_path / "afile").read_text() == "x"


def test_file_output_below_a_file_is_refused_before_any_work(tmp_path, capsys):
    """--newick below a file is refused before --distances is written (not an ENOTDIR half-way)."""
    (tmp_path / "afile").write_text("x")
    code, _, err = run_main(["taxonomy", builtin_taxonomy_path(), "--distances", tmp_path / "d.csv", "--newick",
                             tmp_path / "afile" / "t.nwk"], capsys)
    line = one_error_line(err, "taxonomy")
    assert code == 2 and "'--newick' option must be a path below a folder" in line
    assert not (tmp_path / "d.csv").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_disk_full_is_one_line(tmp_path):
    """Writing to /dev/full fails with ENOSPC, as a full disk does."""
    proc = latent("taxonomy", builtin_taxonomy_path(), "--distances", "/dev/full")
    line = one_error_line(proc.stderr, "taxonomy")
    assert proc.returncode == 1 and line.startswith("latent taxonomy: error: disk full")


def test_file_size_limit_is_one_line(tmp_path):
    """`ulimit -f` makes writes past 1 KiB fail with EFBIG (Python ignores SIGXFSZ)."""
    out = tmp_path / "d.csv"
    cmd = f"ulimit -f 1; exec {sys.executable} -m latent.cli taxonomy {builtin_taxonomy_path()} --distances {out}"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=ENV, timeout=600)
    line = one_error_line(proc.stderr, "taxonomy")
    assert proc.returncode == 1 and "file too large" in line


def test_out_of_memory_is_one_line(tmp_path):
    """Under `ulimit -v` 1 GB, one block of 20000 x 2000 synthetic values (one species: 0.3 GB of float64 noise, about
    1 GB while generated) cannot be allocated."""
    out = tmp_path / "m.h5"
    cmd = (f"ulimit -v 1000000; exec {sys.executable} -m latent.cli synth --out {out} --per-species 20000 "
           f"--dim 2000")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=ENV, timeout=600)
    if "Traceback" in proc.stderr and "import" in proc.stderr and proc.returncode != 1:  # pragma: no cover
        pytest.skip("the interpreter cannot start under this memory limit here")
    line = one_error_line(proc.stderr, "synth")
    assert proc.returncode == 1 and "out of memory" in line and "a smaller --per-species or --dim" in line
    assert not out.exists()


# ---------------------------------------------------------------------------- the process
def test_broken_pipe_exits_quietly(cache):
    """`latent info X | head -1` and a reader that exits at once: no traceback, no 'Exception ignored'."""
    cli = f"{sys.executable} -m latent.cli info {cache}"
    for reader, first in (("head -1", "cache"), ("true", "")):
        proc = subprocess.run(["bash", "-c", f"{cli} | {reader}; echo \"status=${{PIPESTATUS[0]}}\""],
                              capture_output=True, text=True, env=ENV, timeout=600)
        lines = proc.stdout.splitlines()
        assert lines[-1] in ("status=0", "status=1"), proc.stdout
        if first:
            assert lines[0].split()[0] == first
        assert proc.stderr == "", proc.stderr


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "latent.cli", "demo", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        while not out.exists() and proc.poll() is None:  # main() is running once the folder exists
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "latent demo: interrupted"


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(capsys):
    def broken(args):
        return {}["missing"]

    args = build_parser().parse_args(["models"])
    assert run_command(broken, args) == 1
    line = one_error_line(capsys.readouterr().err, "models")
    assert line == ("latent models: error: internal error: KeyError: 'missing' (run with --debug for the traceback; "
                    "please report it)")
    args = build_parser().parse_args(["--debug", "models"])
    assert run_command(broken, args) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and err.strip().splitlines()[-1].startswith("latent models: error:")
    # --debug is also accepted after the command
    assert build_parser().parse_args(["models", "--debug"]).debug is True
    assert build_parser().parse_args(["models"]).debug is False


# ---------------------------------------------------------------------------- help
def test_help_lists_commands_and_every_subcommand_shows_defaults():
    parser = build_parser()
    top = parser.format_help()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        assert f"    {name} " in top, name
    for name, p in sub.choices.items():
        text = p.format_help()
        for action in p._actions:
            default = action.default
            if action.option_strings and default not in (None, False) and default is not argparse.SUPPRESS:
                assert f"(default: {default})" in " ".join(text.split()), (name, action.dest)
    assert "(default: 5)" in sub.choices["evaluate"].format_help()


def test_embed_text_takes_the_model_its_advice_names():
    """embed-text's advice "pass --model (and --pretrained)" names flags that exist."""
    parser = build_parser()
    args = parser.parse_args(["embed-text", "c.h5", "--model", "random-tiny", "--pretrained", "x"])
    assert (args.model, args.pretrained) == ("random-tiny", "x")


# ---------------------------------------------------------------------------- property: random bad input
INTS = ["-1", "0", "-999999999999", "99999999999999999999", "abc", "", "1.5", "nan"]
FLOATS = ["-1", "0", "1.5", "nan", "inf", "-inf", "abc", "", "1e309"]
CHOICES = ["banana", "", "RANDOM"]
DEVICES = ["banana", "", "cuda:7", "cuda:-1", "gpu", "CUDA:99"]
STRINGS = ["", "banana", "=", "x=y=z", "class=", "..", "a.b=c"]


def _bad_paths(root: Path) -> dict[str, list[str]]:
    return {
        "in": [str(root / "missing.h5"), "", str(root), str(root / "afile.txt")],
        "dir": ["", str(root / "afile.txt"), "/sys/latent-prop", str(root / "afile.txt" / "sub")],
        "file": ["", str(root), "/sys/latent-prop.h5", str(root / "afile.txt" / "x.h5")],
    }


#: Per command: the base argv ("{...}" filled in) and its flags with the kind of bad values to try.
#: The bases are cheap, and those of the expensive commands (embed, report, run) point at a missing
#: input, so a random value that happens to be valid still ends at once.
COMMANDS = {
    "taxonomy": (["{tax}"], {"TABLE": "in", "--newick": "file", "--distances": "file", "--on-conflict": "choice",
                             "--on-genus-mismatch": "choice"}),
    "info": (["{cache}"], {"CACHE": "in"}),
    "import": (["{npy}", "--out", "{fresh}.h5"], {"EMB": "in", "--metadata": "in", "--id-column": "str",
                                                 "--taxonomy": "in", "--join-on": "str", "--out": "file",
                                                 "--embedding-column": "str", "--on-conflict": "choice",
                                                 "--on-genus-mismatch": "choice"}),
    "models": ([], {}),
    "embed": (["{root}/no-images", "--out", "{fresh}.h5", "--model", "random-tiny", "--workers", "0",
               "--no-progress"],
              {"SOURCE": "in", "--out": "file", "--model": "str", "--preprocess": "choice", "--batch-size": "int",
               "--workers": "int", "--device": "device", "--precision": "choice", "--seed": "int",
               "--commit-every": "int", "--templates": "choice", "--taxonomy": "in", "--join-on": "str",
               "--engine": "choice", "--address": "str", "--gpus-per-worker": "float", "--shard-size": "int"}),
    "embed-text": (["{cache}"], {"CACHE": "in", "--templates": "choice", "--common-names": "in", "--model": "str",
                                 "--batch-size": "int", "--device": "device"}),
    "evaluate": (["{cache}", "--method", "knn", "--out", "{fresh}", "--bootstrap", "10"],
                 {"CACHE": "in", "--method": "choice", "--out": "dir", "--mode": "choice", "--split": "choice",
                  "--shots": "int", "--folds": "int", "--seed": "int", "--clade": "str", "--test-fraction": "float",
                  "--k": "int", "--temperature": "float", "--text-form": "choice", "--bootstrap": "int",
                  "--device": "device"}),
    "probe": (["{cache}", "--out", "{fresh}", "--probes", "distances", "--permutations", "5", "--set",
               "distances.n_boot=0"],
              {"CACHE": "in", "--out": "dir", "--probes": "str", "--distance": "choice", "--permutations": "int",
               "--max-pairs": "int", "--max-images": "int", "--seed": "int", "--baseline": "in", "--clade": "str",
               "--set": "str", "--device": "device"}),
    "report": (["{root}/missing.h5", "--out", "{fresh}"],
               {"CACHE": "in", "--out": "dir", "--evaluate": "str", "--probes": "str", "--permutations": "int",
                "--verdict-permutations": "int", "--distance": "choice", "--projections": "str",
                "--bootstrap": "int", "--seed": "int", "--baseline": "in", "--set": "str", "--device": "device"}),
    "run": (["{root}/missing.yaml", "--results", "{fresh}"], {"CONFIG": "in", "--results": "dir"}),
    "demo": (["--out", "{root}/afile.txt"], {"--out": "dir"}),
    "synth": (["--out", "{fresh}.h5", "--per-species", "2", "--dim", "8"],
              {"--taxonomy": "in", "--out": "file", "--per-species": "int", "--dim": "int", "--signal": "float",
               "--noise": "float", "--seed": "int"}),
}
N_CASES = 150


def _case(rng: random.Random, command: str, root: Path, fresh: Path, fills: dict[str, str]) -> list[str]:
    base, flags = COMMANDS[command]
    argv = [a.format(fresh=fresh, **fills) for a in base]
    paths = _bad_paths(root)
    roll = rng.random()
    if not flags or roll < 0.05:  # an unknown flag, or a required one missing
        return [command, *argv, "--no-such-flag"] if roll < 0.025 or not flags else [command]
    flag = rng.choice(sorted(flags))
    kind = flags[flag]
    pool = {"int": INTS, "float": FLOATS, "choice": CHOICES, "device": DEVICES, "str": STRINGS}.get(kind) \
        or paths[kind]
    value = rng.choice(pool)
    if not flag.startswith("-"):  # the first positional argument
        return [command, value, *argv[1:]] if argv and not argv[0].startswith("-") else [command, value, *argv]
    if flag in argv:
        i = argv.index(flag)
        argv = argv[:i] + argv[i + 2:]
    if value.startswith("-"):  # --seed=-1: argparse would read "-inf" as a flag
        return [command, *argv, f"{flag}={value}"]
    return [command, *argv, flag, value]


def test_random_bad_input_never_gives_a_traceback(cache, tmp_path, capsys, monkeypatch):
    """Seeded random bad values for every subcommand: an exit code of 0, 1 or 2 and no traceback."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    (root / "afile.txt").write_text("not a table, not a cache\n")
    np.save(root / "e.npy", np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32))
    fills = {"cache": str(cache), "tax": str(builtin_taxonomy_path()), "npy": str(root / "e.npy"), "root": str(root)}
    rng = random.Random(12)
    commands = sorted(COMMANDS)
    seen: dict[int, int] = {}
    for i in range(N_CASES):
        command = commands[i % len(commands)] if i < len(commands) else rng.choice(commands)
        argv = _case(rng, command, root, tmp_path / f"case{i}", fills)
        code, _, err = run_main(argv, capsys)
        assert code in (0, 1, 2), (argv, code, err)
        assert "Traceback" not in err and "Exception ignored" not in err, (argv, err)
        if code:
            assert f"latent {command}: error:" in err or "usage:" in err, (argv, err)
        seen[code] = seen.get(code, 0) + 1
    print("exit codes:", seen)
    assert seen.get(2, 0) > N_CASES // 2  # most random values are refused as bad input


def test_every_flag_the_library_advises_exists():
    """Advice such as "pass --force" names a flag of the command line (no "--append" that does not exist)."""
    import re

    parser = build_parser()
    flags = {s for a in parser._actions for s in a.option_strings}
    sub = next(a for a in parser._actions if a.dest == "command")
    for p in sub.choices.values():
        flags |= {s for a in p._actions for s in a.option_strings}
    missing = []
    for path in sorted((REPO / "latent").rglob("*.py")):
        if path.name == "cli.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", line):
                if flag not in flags:
                    missing.append(f"{path.relative_to(REPO)}:{number}: {flag}")
    assert not missing, missing


def test_probe_options_refuse_a_device_that_does_not_exist():
    from latent.probes.base import ProbeOptions

    with pytest.raises(InputError, match=r"^The 'device' parameter of ProbeOptions must be one of auto, cpu"):
        ProbeOptions(device="banana")
    assert ProbeOptions(device=" CPU").device == "cpu"


def test_misspelled_probe_setting_in_yaml_is_refused(tmp_path, capsys):
    """YAML `probe.settings` goes through the same check as --set (it ran the default before)."""
    config = tmp_path / "bad.yaml"
    config.write_text("name: tiny\nseed: 0\ndata:\n  synth: {signal: [1.0], per_species: 3, dim: 8}\n"
                      "evaluate:\n  - {method: knn}\nprobe:\n  permutations: 5\n  settings:\n"
                      "    dendrogram: {methd: ward}\n")
    code, _, err = run_main(["run", config, "--results", tmp_path / "results"], capsys)
    line = one_error_line(err, "run")
    assert code == 2 and line.endswith("Unknown setting 'methd' for probe 'dendrogram'; its settings: method, n_boot.")


@pytest.mark.parametrize("command", ["evaluate", "probe"])
def test_force_replaces_results_of_another_cache(command, cache, tmp_path, capsys):
    """--out holding another cache's results: refused (and kept) without --force, replaced with it."""
    other = tmp_path / "other.h5"
    assert run_main(["-q", "synth", "--out", other, "--per-species", "3", "--dim", "8", "--seed", "5"], capsys)[0] == 0
    out = tmp_path / "out"
    extra = ["--method", "knn", "--bootstrap", "10"] if command == "evaluate" else \
        ["--probes", "distances", "--permutations", "2", "--set", "distances.n_boot=0"]
    assert run_main([command, cache, "--out", out, *extra], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code, _, err = run_main([command, other, "--out", out, *extra], capsys)
    assert code == 2 and "--force" in one_error_line(err, command)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert run_main([command, other, "--out", out, *extra, "--force"], capsys)[0] == 0
    assert str(other) in (out / "run.json").read_text()
