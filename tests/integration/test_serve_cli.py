"""package -> serve -> chat through the real CLI and a real Triton server; a stub killed under serve is
reloaded (one line on stderr); the OpenAI API serve opens beside Triton answers the real ``openai``
client, says 503 while Triton is down and follows a restart by the watcher; clean stop on SIGINT, also
during start-up, with no process left; a taken port (Triton's or the API's) refused before anything
starts; --no-openai opens nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from tests.fixtures.ports import free_port  # noqa: E402
from tests.fixtures.tiny import make_checkpoint, make_tokenizer  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]


def cli(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SWALLOW_TRT_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "swallow_trt.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(x) for x in found.stdout.split()]


def _wait_for_line(lines: list[str], pattern: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while not (found := [x for x in list(lines) if re.search(pattern, x)]):
        assert time.monotonic() < deadline, f"no line matching {pattern!r} in {lines}"
        time.sleep(0.2)
    return found[0]


def _status(url: str | urllib.request.Request) -> int:
    import urllib.error

    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _check_api(base_url: str, key: str | None) -> None:
    """The real openai client against the API serve opened: a Japanese chat streamed and not, same text."""
    client = openai.OpenAI(base_url=base_url, api_key=key or "none", max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": "日本で一番高い山は何ですか？"}]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=12,
                                                 temperature=0, stream=True))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert whole.usage is not None
    assert whole.usage.completion_tokens > 0
    if key is not None:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()


def test_package_serve_chat_and_stop(tmp_path: Path) -> None:
    # Named like a registry model so the registry supplies the Llama-3 chat format and <|eot_id|> stop.
    ckpt = make_checkpoint(
        tmp_path / "Llama-3.1-Swallow-8B-Instruct-v0.3", "llama31", vocab_size=len(make_tokenizer("llama31"))
    )
    repo = tmp_path / "repo"
    packaged = cli("package", "--model", str(ckpt), "--out", str(repo), "--json", home=tmp_path)
    assert packaged.returncode == 0, packaged.stderr
    assert '"chat_format": "llama3"' in packaged.stdout
    again = cli("package", "--model", str(ckpt), "--out", str(repo), home=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr

    port, api_port = free_port(), free_port()
    # The key from the environment, as a deployment would set it (never on a command line).
    env = dict(os.environ, SWALLOW_TRT_HOME=str(tmp_path), SWALLOW_TRT_API_KEY="sk-serve-test")
    serve = subprocess.Popen(
        [sys.executable, "-m", "swallow_trt.cli.main", "serve", "--repo", str(repo), "--grpc-port", str(port),
         "--openai-port", str(api_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    errors: list[str] = []
    assert serve.stderr is not None
    reader = threading.Thread(target=lambda: errors.extend(serve.stderr or ()), daemon=True)
    reader.start()
    try:
        assert serve.stdout is not None
        seen = []
        deadline = time.monotonic() + 240
        for line in serve.stdout:
            seen.append(line)
            if line.startswith("try: swallow-trt chat"):
                break
            assert time.monotonic() < deadline
        assert any(f"127.0.0.1:{port}" in line for line in seen), seen
        assert all("0.0.0.0" not in line for line in seen)
        base_url = f"http://127.0.0.1:{api_port}/v1"
        assert any(line.split() == ["openai", base_url] for line in seen), seen
        _check_api(base_url, "sk-serve-test")
        answer = cli(
            "chat", "--url", f"127.0.0.1:{port}", "--max-tokens", "12", "日本で一番高い山は？", home=tmp_path
        )
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip()
        # serve watches the stubs: one of chat's, killed, gets one line, a reload, and chat answers.
        os.kill(_pids(f"{repo}/chat/1/model.py")[0], signal.SIGKILL)
        reloaded = _wait_for_line(errors, r"^serve: reloaded chat in [\d.]+ s", 300)  # loaded CI: generous
        assert re.search(r"^serve: stub of model 'chat' instance chat_\d+_\d+ died \(", "".join(errors), re.M)
        print(reloaded)
        again = cli("chat", "--url", f"127.0.0.1:{port}", "--max-tokens", "4", "こんにちは", home=tmp_path)
        assert again.returncode == 0, again.stderr
        bad = cli("chat", "--url", f"127.0.0.1:{port}", "--max-tokens", "4", "   ", home=tmp_path)
        assert bad.returncode == 2
        assert "the prompt is empty" in bad.stderr
        _api_follows_a_restart(serve, repo, f"http://127.0.0.1:{api_port}", errors)
    finally:
        serve.send_signal(signal.SIGCONT)  # in case the restart check stopped it
        serve.send_signal(signal.SIGINT)
        rest, _ = serve.communicate(timeout=60)
        reader.join(10)
    err = "".join(errors)
    assert serve.returncode == 0, err
    assert rest.strip().endswith("stopped")
    assert "Traceback" not in err
    left = subprocess.run(["pgrep", "-f", str(repo)], capture_output=True, text=True)
    # The API child's command line names the repository too (--repo): it is gone with Triton's.
    assert left.stdout.strip() == "", "a server, stub or the API outlived serve"
    assert not _listening(api_port)


def _api_follows_a_restart(serve: subprocess.Popen[str], repo: Path, api: str, errors: list[str]) -> None:
    """Triton killed under serve: the API says 503 while it is down, and answers again, on the same gRPC
    port, once the watcher has restarted it. serve is held stopped (SIGSTOP) while Triton is dead, so the
    503s are seen for certain rather than raced against the restart."""
    (triton,) = _pids(f"tritonserver .*--model-repository={repo} ")
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-serve-test"}
    listed = urllib.request.urlopen(urllib.request.Request(f"{api}/v1/models", headers=headers), timeout=60)
    model = json.loads(listed.read())["data"][0]["id"]
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "こんにちは"}]}).encode()
    serve.send_signal(signal.SIGSTOP)
    try:
        os.kill(triton, signal.SIGKILL)
        # Its parent (serve) is stopped, so it stays a zombie, its sockets already closed.
        while _state(triton) not in ("Z", None):
            time.sleep(0.1)
        assert _status(f"{api}/health") == 503
        post = urllib.request.Request(f"{api}/v1/chat/completions", data=body, headers=headers, method="POST")
        assert _status(post) == 503
    finally:
        serve.send_signal(signal.SIGCONT)
    _wait_for_line(errors, r"^serve: Triton restarted, ready in", 600)
    deadline = time.monotonic() + 120  # gRPC reconnects within its back-off; a bound against a hang
    while _status(f"{api}/health") != 200:
        assert time.monotonic() < deadline, "the API did not recover after Triton's restart"
        time.sleep(0.5)
    _check_api(f"{api}/v1", "sk-serve-test")


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_cli_refusals(tmp_path: Path) -> None:
    not_repo = cli("serve", "--repo", str(tmp_path), home=tmp_path)
    assert not_repo.returncode == 2
    assert "is not a model repository" in not_repo.stderr
    unreachable = cli("chat", "--url", f"127.0.0.1:{free_port()}", "こんにちは", home=tmp_path, timeout=120)
    assert unreachable.returncode == 3
    assert "cannot reach Triton" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    engine = cli(
        "package", "--model", "8b", "--backend", "tensorrtllm", "--out", str(tmp_path / "r"), home=tmp_path
    )
    assert engine.returncode == 2
    assert "--backend 'tensorrtllm' needs --engine" in engine.stderr
    neither = cli("package", "--out", str(tmp_path / "r"), home=tmp_path)
    assert neither.returncode == 2
    assert "exactly one of --model" in neither.stderr
    not_engine = cli("package", "--engine", str(tmp_path), "--out", str(tmp_path / "r"), home=tmp_path)
    assert not_engine.returncode == 2
    assert "not a TensorRT-LLM engine directory" in not_engine.stderr
    assert not (tmp_path / "r").exists()


SLOW_CONFIG = """
name: "slow"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

SLOW_MODEL = """
import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(3600)  # keeps the server starting until it is interrupted

    def execute(self, requests):
        return []
"""


def _slow_repo(root: Path) -> Path:
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "config.pbtxt").write_text(SLOW_CONFIG.lstrip())
    (root / "slow" / "1" / "model.py").write_text(SLOW_MODEL.lstrip())
    return root


def test_ctrl_c_during_start_up_stops_at_once(tmp_path: Path) -> None:
    repo = _slow_repo(tmp_path / "repo")
    env = dict(os.environ, SWALLOW_TRT_HOME=str(tmp_path))
    serve = subprocess.Popen(
        [sys.executable, "-m", "swallow_trt.cli.main", "serve", "--repo", str(repo)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        # Start-up is under way once the slow model's stub runs its initialize.
        deadline = time.monotonic() + 240
        while not _pids(f"{repo}/slow/1/model.py"):
            assert serve.poll() is None, serve.communicate()
            assert time.monotonic() < deadline, "the slow model's stub never started"
            time.sleep(0.2)
        serve.send_signal(signal.SIGINT)
        out, err = serve.communicate(timeout=60)  # a bound against a hang, not a timing assertion
    finally:
        if serve.poll() is None:
            serve.kill()
    assert serve.returncode == 130, err
    assert err.splitlines() == ["error: interrupted by SIGINT while Triton was starting; stopped it"], err
    assert out == ""
    assert _pids(str(repo)) == [], "a server or stub outlived serve"


def _trivial_repo(root: Path) -> Path:
    """chat and tensorrt_llm models that load at once and do nothing: a repository serve would open the
    API for, without the cost of a real one."""
    for name in ("chat", "tensorrt_llm"):
        (root / name / "1").mkdir(parents=True)
        config = SLOW_CONFIG.replace('name: "slow"', f'name: "{name}"')
        if name == "chat":
            config += 'parameters { key: "tokenizer_dir" value { string_value: "tokenizer" } }\n'
        (root / name / "config.pbtxt").write_text(config.lstrip())
        (root / name / "1" / "model.py").write_text(SLOW_MODEL.replace("time.sleep(3600)", "pass").lstrip())
    return root


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--metrics-port", "the metrics port {port} on 127.0.0.1 is already in use — stop what listens there, "
         "or choose another with --metrics-port (leave it out for a free one)"),
        ("--openai-port", "the OpenAI API port {port} on 127.0.0.1 is already in use — stop what listens "
         "there, or choose another with --openai-port (or --no-openai)"),
    ],
)  # fmt: skip
def test_port_in_use_is_refused_before_launch(tmp_path: Path, flag: str, message: str) -> None:
    repo = _trivial_repo(tmp_path / "repo")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Never the default 8000 for the API: something else on this machine may hold it.
        api = () if flag == "--openai-port" else ("--openai-port", str(free_port()))
        busy = cli("serve", "--repo", str(repo), flag, str(port), *api, home=tmp_path, timeout=120)
    assert busy.returncode == 3, busy.stderr
    assert busy.stderr.splitlines() == ["error: " + message.format(port=port)]
    # Refused before any launch: no server log was opened, and no process of this repository ran.
    assert not (tmp_path / "triton-logs").exists() or not any((tmp_path / "triton-logs").iterdir())
    assert _pids(str(repo)) == []
    same = cli("serve", "--repo", str(repo), "--http-port", "8123", "--grpc-port", "8123", "--no-openai",
               home=tmp_path)  # fmt: skip
    assert same.returncode == 2
    assert "the same port is given for two endpoints" in same.stderr
    shared = cli("serve", "--repo", str(repo), "--grpc-port", "8123", "--openai-port", "8123", home=tmp_path)
    assert shared.returncode == 2
    assert shared.stderr.startswith("error: --openai-port 8123 is also --grpc-port"), shared.stderr


def test_no_openai_opens_nothing(tmp_path: Path) -> None:
    repo = _trivial_repo(tmp_path / "repo")
    api_port = free_port()
    env = dict(os.environ, SWALLOW_TRT_HOME=str(tmp_path))
    serve = subprocess.Popen(
        [sys.executable, "-m", "swallow_trt.cli.main", "serve", "--repo", str(repo), "--no-openai",
         "--openai-port", str(api_port), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        text = ""
        for line in serve.stdout:  # blocks until serve is ready (or ends); the JSON spans lines
            text += line
            if line.rstrip() == "}":
                break
        ready = json.loads(text)
        assert ready["ready"] is True
        assert "openai" not in ready
        assert not _listening(api_port)
        assert _pids(f"openai --triton-url .*--repo {repo}") == []
    finally:
        serve.send_signal(signal.SIGINT)
        serve.communicate(timeout=60)
    assert serve.returncode == 0
    assert _pids(str(repo)) == []


def test_ctrl_c_stops_triton_and_the_api(tmp_path: Path) -> None:
    """serve's loop in-process (what the CLI runs): the API opens once Triton is ready, answers the openai
    client, and SIGINT ends both with no process left."""
    from swallow_trt.openai_api.server import ApiLaunch, ApiProcess
    from swallow_trt.triton_repo.launch import inspect_repo, run_until_stopped, server_for
    from swallow_trt.triton_repo.recovery import Recovery
    from swallow_trt.triton_repo.server import TritonServer, leftover_processes
    from tests.fixtures.schedule_repo import schedule_repo

    params = {"first_token_ms": "0", "token_interval_ms": "0", "require_forced_length": "false"}
    repo = schedule_repo(tmp_path, params, max_batch_size=8)
    server = server_for(inspect_repo(repo), recovery=Recovery(), start_timeout_s=600)
    api = ApiLaunch(repo, port=free_port(), log_path=tmp_path / "api.log")
    assert api.check({}) == repo.name
    started: list[ApiProcess] = []
    order: list[str] = []

    def companion(triton: TritonServer, stop: Callable[[], bool]) -> ApiProcess:
        assert triton.model_ready("tensorrt_llm")  # the API starts after Triton is ready
        started.append(api.companion()(triton, stop))
        return started[-1]

    def on_ready(triton: TritonServer) -> None:
        order.append("ready")
        _check_api(api.url, None)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the terminal sends it

    assert run_until_stopped(server, on_ready=on_ready, companion=companion) == signal.SIGINT
    assert order == ["ready"]
    assert leftover_processes(server) == []
    (proc,) = started
    assert proc.proc.poll() is not None
    assert _pids(f"openai --triton-url .*--repo {repo}") == []
    assert not _listening(api.port)
