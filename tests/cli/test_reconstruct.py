"""The reconstruct/simulate command line: Ctrl-C, progress in logs, start-up cost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ctresample.cli import main

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def test_ctrl_c_during_start_up_is_one_line_and_130(monkeypatch, capsys):
    import ctresample.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["reconstruct", "x", "y"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("interrupted (Ctrl-C)") and "Traceback" not in err


def test_ctrl_c_that_a_library_turns_into_another_error_still_stops(monkeypatch, capsys):
    """A library that swallows the KeyboardInterrupt (torch's or numpy's imports) cannot hide the Ctrl-C."""
    import ctresample.cli as cli
    import ctresample.utils as utils

    def swallowing_import():
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the handler main() installed records it
            time.sleep(1)
        except KeyboardInterrupt:
            raise RuntimeError("autograd initialization failed") from None

    monkeypatch.setattr(cli, "build_parser", swallowing_import)
    monkeypatch.setattr(utils, "_INTERRUPTED", [False])
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert main(["reconstruct", "x", "y"]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert err.startswith("interrupted (Ctrl-C)") and "Traceback" not in err
    # the next command of the same process, without a Ctrl-C: its error is not hidden by the earlier one
    assert utils.interrupted()
    def broken_import():
        raise RuntimeError("real bug")

    monkeypatch.setattr(cli, "build_parser", broken_import)
    try:
        with pytest.raises(RuntimeError, match="real bug"):
            main(["reconstruct", "x", "y"])
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_package_imports_without_torch():
    """``ctresample`` and its CLI module import nothing heavy: a Ctrl-C while the command starts lands in main()."""
    code = "import sys, ctresample.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_sigint_while_starting_prints_no_traceback(tmp_path, delay):
    np.save(tmp_path / "v.npy", np.zeros((2, 16, 16), np.float32))
    cmd = [sys.executable, "-m", "ctresample", "reconstruct", str(tmp_path / "v.npy"), str(tmp_path / "o"),
           "--views", "9", "--size", "16"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the command finished before the signal")
    # an interrupt that lands inside numpy's lazy imports or torch's start-up is swallowed there and
    # surfaces as another error (RecursionError, "autograd initialization failed"): the run still stops
    assert proc.returncode in (130, -signal.SIGINT), err  # -2: the signal came before Python's handler
    assert "Traceback" not in err, err
    if proc.returncode == 130:
        assert err.strip().splitlines()[-1].startswith("interrupted (Ctrl-C)")


def test_progress_in_a_log_is_plain_lines(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.zeros((3, 16, 16), np.float32))
    rc = main(["reconstruct", str(tmp_path / "v.npy"), str(tmp_path / "o"), "--views", "9", "--size", "16"])
    assert rc == 0
    err = capsys.readouterr().err  # not a terminal
    assert "\x1b" not in err and "\r" not in err
    assert "fbp v: 0/3 slices (0%)" in err and "fbp v: 3/3 slices (100%)" in err


def test_plain_progress_lines():
    import io

    from ctresample.utils import PlainProgress, progress

    buf = io.StringIO()
    with progress(4, "task", stream=buf) as bar:
        assert isinstance(bar, PlainProgress)
        bar.update(1)
        bar.set_postfix(loss="0.5")
        bar.update(3)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "task: 0/4 slices (0%), 0 s" and lines[-1].startswith("task: 4/4 slices (100%)")
    assert lines[-1].endswith("loss=0.5") and len(lines) == 2  # no line per update in between
    buf = io.StringIO()
    with progress(4, "quiet", stream=buf, disable=True) as bar:
        bar.update(4)
    assert buf.getvalue() == ""
