"""Bad input on the commands other than ``plan`` fails as one ``error: <fact> — <hint>`` line, exit 2,
before any server is contacted or anything is written (see tests/unit/test_plan_errors.py for plan).

Each rule has a valid neighbour that gets past validation, so a check that rejects everything fails here:
chat's neighbours reach the (absent) server and exit 3; build's are dry runs that exit 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from swallow_trt.cli.main import app
from tests.fixtures.cli import usage_error
from tests.fixtures.ports import free_port

SJIS_A = "あ".encode("shift_jis")  # b"\x82\xa0": not UTF-8
BUILD = ["build", "--model", "70b", "--tp", "4", "--fp8", "--target", "h100x4", "--dry-run"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SWALLOW_TRT_DEBUG", raising=False)
    monkeypatch.setenv("SWALLOW_TRT_HOST_RAM_GIB", "1024")
    monkeypatch.setenv("SWALLOW_TRT_HOME", str(tmp_path / "home"))


@pytest.fixture
def closed_url() -> str:
    """A local port nobody listens on: a request that passed validation fails fast with exit 3."""
    return f"127.0.0.1:{free_port()}"


def invoke(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin)


def unreachable(result: Result) -> None:
    """Validation passed: the command went on to contact the server, which is not there."""
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    assert "cannot reach Triton" in result.stderr
    assert "Traceback" not in result.output


# --- chat: text that is not valid in the terminal's encoding ---------------------------------------


def test_chat_argument_not_utf8(closed_url: str) -> None:
    # What Python makes of the bytes of a Shift-JIS terminal under a UTF-8 locale: lone surrogates.
    prompt = os.fsdecode(SJIS_A)
    message, hint = usage_error(invoke("chat", "--url", closed_url, prompt))
    assert message.startswith("the prompt is not valid utf-8 text")
    assert "0x82" in message
    assert "UTF-8 locale" in hint
    assert "--encoding" in hint


def test_chat_argument_with_encoding_is_decoded(closed_url: str) -> None:
    unreachable(invoke("chat", "--url", closed_url, "--encoding", "shift_jis", os.fsdecode(SJIS_A)))


def test_chat_argument_wrong_encoding(closed_url: str) -> None:
    # The UTF-8 bytes of "あ" (e3 81 82) end inside a Shift-JIS double-byte character.
    message, hint = usage_error(invoke("chat", "--url", closed_url, "--encoding", "shift_jis", "あ"))
    assert "not valid shift_jis text" in message
    assert "--encoding" in hint


def test_chat_stdin_not_utf8(closed_url: str) -> None:
    # The interactive chat writes its "> " prompt before it reads a line.
    message, hint = usage_error(invoke("chat", "--url", closed_url, stdin=SJIS_A + b"\n"), stdout="> ")
    assert message.startswith("the prompt (stdin) is not valid utf-8 text")
    assert "offset 0" in message
    assert "--encoding" in hint


def test_chat_stdin_with_encoding_is_decoded(closed_url: str) -> None:
    unreachable(invoke("chat", "--url", closed_url, "--encoding", "cp932", stdin=SJIS_A + b"\n"))


def test_chat_stdin_second_turn_not_utf8(closed_url: str) -> None:
    """Every line of the interactive loop is checked, not only the first (/reset is read without a turn)."""
    message, _ = usage_error(
        invoke("chat", "--url", closed_url, stdin=b"/reset\n" + SJIS_A + b"\n"), stdout="> > "
    )
    assert "not valid utf-8" in message


# --- chat: empty and malformed values --------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_chat_empty_prompt(closed_url: str, prompt: str) -> None:
    message, hint = usage_error(invoke("chat", "--url", closed_url, prompt))
    assert message == "the prompt is empty"
    assert "interactive" in hint


def test_chat_empty_stop(closed_url: str) -> None:
    message, hint = usage_error(invoke("chat", "--url", closed_url, "--stop", "", "こんにちは"))
    assert "--stop is empty" in message
    assert "--stop" in hint


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8001", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", ":8001", "a b:1", ""]
)
def test_chat_bad_url(url: str) -> None:
    message, hint = usage_error(invoke("chat", "--url", url, "こんにちは"))
    assert f"--url {url!r} is not HOST:PORT" == message
    assert "8001" in hint


def test_chat_unknown_encoding(closed_url: str) -> None:
    message, hint = usage_error(invoke("chat", "--url", closed_url, "--encoding", "sjis-9", "hi"))
    assert "unknown --encoding 'sjis-9'" in message
    assert "shift_jis" in hint


def test_chat_zero_max_tokens(closed_url: str) -> None:
    message, _ = usage_error(invoke("chat", "--url", closed_url, "--max-tokens", "0", "こんにちは"))
    assert "--max-tokens" in message


def test_chat_valid_neighbours(closed_url: str) -> None:
    unreachable(invoke("chat", "--url", closed_url, "日本で一番高い山は？"))
    unreachable(invoke("chat", "--url", closed_url, "--stop", "。", "--system", "簡潔に。", " 前後に空白 "))
    unreachable(invoke("chat", "--url", closed_url.replace("127.0.0.1", "localhost"), "hi"))
    unreachable(invoke("chat", "--url", closed_url, stdin="こんにちは\n".encode()))


# --- build --dry-run: calibration numbers and --out ------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "low"),
    [
        ("--calib-size", "-5", "1"),
        ("--calib-size", "0", "1"),
        ("--calib-max-seq-len", "15", "16"),
        ("--eval-samples", "-1", "0"),
        ("--eval-seq-len", "0", "16"),
    ],
)
def test_build_dry_run_calibration_numbers(flag: str, value: str, low: str) -> None:
    message, hint = usage_error(invoke(*BUILD, flag, value))
    assert message == f"{flag} must be at least {low}, got {value}"
    assert hint == f"pass {flag} {low} or more"


def test_build_dry_run_missing_calibration_file(tmp_path: Path) -> None:
    missing = tmp_path / "calib.jsonl"
    message, hint = usage_error(invoke(*BUILD, "--calib", str(missing)))
    assert f"calibration file {str(missing)!r} does not exist" == message
    assert "--calib ja" in hint
    message, _ = usage_error(invoke(*BUILD, "--calib", str(tmp_path)))
    assert "is not a file" in message


@pytest.mark.parametrize("command", [BUILD, ["plan", "--model", "8b", "--target", "hopper"]])
def test_out_is_a_regular_file(tmp_path: Path, command: list[str]) -> None:
    regular = tmp_path / "out.txt"
    regular.write_text("not a directory\n", encoding="utf-8")
    message, hint = usage_error(invoke(*command, "--out", str(regular)))
    assert message == f"--out {str(regular)!r} is a file, not a directory"
    assert "--out" in hint
    message, _ = usage_error(invoke(*command, "--out", str(regular / "sub")))
    assert f"is inside {regular}, which is a file" in message


def test_build_dry_run_valid_neighbours(tmp_path: Path) -> None:
    calib = tmp_path / "calib.jsonl"
    calib.write_text('{"text": "日本語の文章です。"}\n', encoding="utf-8")
    new_dir = tmp_path / "new" / "out"
    for extra in (
        ["--calib-size", "1", "--calib-max-seq-len", "16", "--eval-samples", "0", "--eval-seq-len", "16"],
        ["--calib", str(calib), "--out", str(new_dir)],
        ["--out", str(tmp_path)],
    ):
        result = invoke(*BUILD, *extra)
        assert result.exit_code == 0, (extra, result.stderr)
    assert not new_dir.exists()  # a dry run writes nothing


# --- the other stages' --out -----------------------------------------------------------------------


def test_quantize_out_is_a_regular_file(tmp_path: Path) -> None:
    regular = tmp_path / "ckpt"
    regular.write_bytes(b"")
    message, _ = usage_error(
        invoke("quantize", "--model", "8b", "--fp8", "--target", "hopper", "--out", str(regular))
    )
    assert "is a file, not a directory" in message


def test_quantize_calibration_numbers() -> None:
    message, _ = usage_error(invoke("quantize", "--model", "8b", "--fp8", "--calib-size", "0"))
    assert message == "--calib-size must be at least 1, got 0"


def test_quickstart_out_is_a_regular_file(tmp_path: Path) -> None:
    regular = tmp_path / "qs"
    regular.write_bytes(b"")
    message, _ = usage_error(invoke("quickstart", "--out", str(regular)))
    assert "is a file, not a directory" in message


def test_profile_out_and_url_before_the_server(tmp_path: Path, closed_url: str) -> None:
    regular = tmp_path / "report"
    regular.write_bytes(b"")
    message, _ = usage_error(invoke("profile", "--url", closed_url, "-c", "1", "--out", str(regular)))
    assert "is a file, not a directory" in message
    message, _ = usage_error(invoke("profile", "--url", "127.0.0.1:http", "-c", "1"))
    assert "is not HOST:PORT" in message
    unreachable(invoke("profile", "--url", closed_url, "-c", "1", "--out", str(tmp_path / "new")))
