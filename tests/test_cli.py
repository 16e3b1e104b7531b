"""The command surface: every verb exists, errors are messages."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facecurate.cli import app
from facecurate.workspace import ENV_VAR

runner = CliRunner()
SURFACE = ("init", "queries", "crawl", "import", "dedup", "crop", "filter", "review", "export", "evaluate",
           "run", "status", "demo", "report", "calibrate", "engines")


def test_help_lists_the_whole_surface():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in SURFACE:
        assert name in result.output


def test_every_command_is_available():
    for name in SURFACE:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, name
        assert "not available yet" not in result.output


def test_run_rejects_an_unknown_stage_before_opening_anything(tmp_path: Path):
    ws = tmp_path / "w"
    assert runner.invoke(app, ["init", str(ws)]).exit_code == 0
    result = runner.invoke(app, ["run", "-w", str(ws), "--stages", "crop,filtre"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "'filtre'" in result.stderr and "--stages crop,filter" in result.stderr


def test_no_workspace_is_a_message_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert "facecurate init" in result.output and "Traceback" not in result.output


def test_init_import_status_json(tmp_path: Path, demo_dir: Path):
    ws = tmp_path / "w"
    assert runner.invoke(app, ["init", str(ws)]).exit_code == 0
    result = runner.invoke(app, ["import", str(demo_dir / "obama.jpg"), "--label", "makeup", "-w", str(ws),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["new"] == 1
    status = runner.invoke(app, ["status", "-w", str(ws), "--json"])
    counts = json.loads(status.stdout)
    assert counts["images"] == 1 and counts["crop"]["pending"] == 1
    assert counts["by_label"]["makeup"]["images"] == 1


def test_python_dash_m_and_bad_path_message(tmp_path: Path):
    ws = tmp_path / "w"
    subprocess.run([sys.executable, "-m", "facecurate", "init", str(ws)], check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "facecurate", "import", str(tmp_path / "missing"), "-w", str(ws)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.timeout(120)  # a hang guard only
def test_ctrl_c_ends_the_process_even_when_a_worker_thread_cannot_be_reached():
    """Python's exit joins every worker thread: after Ctrl-C, one blocked where the stage's abort cannot reach
    it must not hold the process; it ends with 130 once the grace period is over."""
    script = ("import signal, threading, time\n"
              "import facecurate.cli as cli\n"
              "cli.INTERRUPT_GRACE = 1.0\n"
              "signal.signal(signal.SIGINT, cli.interrupt)\n"
              "threading.Thread(target=time.sleep, args=(600,)).start()\n"
              "print('ready', flush=True)\n"
              "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert code == 130
    assert proc.stderr is not None and "KeyboardInterrupt" in proc.stderr.read()  # interrupted first, as ever
