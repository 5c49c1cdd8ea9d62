"""The OpenAI-compatible API with ``--workers 2`` (``swallow-trt openai --workers`` and ``swallow-trt serve
--openai-workers``) in front of the real Triton server with the zero-delay schedule model.

Which worker serves a request is read from the kernel, not guessed: every connection is held open with
its body one byte short (uvicorn waits for a body without a deadline) until the server-side socket sits
in one worker's file table (``/proc/<pid>/fd`` against ``/proc/net/tcp``); once both workers hold some,
the bodies are finished and every answer must be exact (status, token count, text, streamed or not).
Stopping the API leaves no process of its group; SIGTERM to the parent alone, and Ctrl-C (SIGINT to the
whole group, as a terminal sends it), end the workers with it. No wall-clock assertions: deadlines only
bound hangs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from swallow_trt.openai_api.server import ApiLaunch, start_api_process  # noqa: E402
from tests.fixtures.ports import free_port  # noqa: E402
from tests.fixtures.triton import Served, serving  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]
PROMPT = "日本で一番高い山は何ですか？"
TOKENS = 8
MIN_HELD = 32  # requests held open at once, at least
MAX_HELD = 256  # connections held open at most while waiting for both workers to take some


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory, triton_install: Any) -> Iterator[Served]:
    from tests.fixtures.repos import SCHEDULE_ZERO_DELAY
    from tests.fixtures.schedule_repo import schedule_repo

    root = tmp_path_factory.mktemp("oai-workers")
    repo = schedule_repo(root, SCHEDULE_ZERO_DELAY, max_batch_size=MAX_HELD)
    with serving(repo, root / "server.log") as server:
        yield Served(server, repo)


# ------------------------------------------------------------------------------------------ /proc


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a process; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _live(pids: list[int]) -> list[int]:
    return [p for p in pids if (s := _stat(p)) is not None and s[0] != "Z"]


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _children(pid: int) -> list[int]:
    return [p for p in _all_pids() if (s := _stat(p)) is not None and s[1] == pid and s[0] != "Z"]


def _group(pgid: int) -> list[int]:
    """Live processes of a process group (the API's: its parent and its workers)."""
    return [p for p in _all_pids() if (s := _stat(p)) is not None and s[2] == pgid and s[0] != "Z"]


def _group_ends(pgid: int, timeout_s: float = 60) -> list[int]:
    """The group's processes left once it has emptied or ``timeout_s`` (a bound against hangs) passed."""
    deadline = time.monotonic() + timeout_s
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _fds(pid: int) -> dict[str, list[int]]:
    """Link target -> fd numbers of a process (``socket:[inode]``, ``anon_inode:[eventpoll]``, ...)."""
    out: dict[str, list[int]] = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            out.setdefault(os.readlink(f"/proc/{pid}/fd/{name}"), []).append(int(name))
        except OSError:
            continue
    return out


def _tcp() -> list[tuple[int, int, str, str]]:
    """(local port, remote port, state, socket inode) of every TCP socket (IPv4 and IPv6)."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
            rows.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state, inode))
    return rows


def _listen_inode(port: int) -> str:
    found = [inode for local, _, state, inode in _tcp() if local == port and state == "0A"]
    assert len(found) == 1, found
    return found[0]


def _accepting(pid: int, listen: str) -> bool:
    """Whether a process polls the listening socket: a worker does so only once its app is built
    (uvicorn loads the app, then serves), so a worker that polls it is ready to accept."""
    fds = _fds(pid)
    listen_fds = {str(fd) for fd in fds.get(f"socket:[{listen}]", [])}
    for epoll in fds.get("anon_inode:[eventpoll]", []):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{epoll}").read_text()
        except OSError:
            continue
        watched = {line.split()[1] for line in info.splitlines() if line.startswith("tfd:")}
        if watched & listen_fds:
            return True
    return False


def _workers(api_pid: int, port: int, timeout_s: float = 300) -> list[int]:
    """The API's worker processes once every one of them accepts connections: the children of the
    parent that hold the listening socket (multiprocessing's helpers do not)."""
    listen = _listen_inode(port)
    deadline = time.monotonic() + timeout_s  # a bound against hangs only
    while True:
        workers = [c for c in _children(api_pid) if f"socket:[{listen}]" in _fds(c)]
        if len(workers) == 2 and all(_accepting(w, listen) for w in workers):
            return sorted(workers)
        assert time.monotonic() < deadline, f"workers {workers} of {api_pid} never all accepted"
        time.sleep(0.2)


def _owners(api_port: int, client_ports: list[int], workers: list[int]) -> dict[int, int]:
    """Client port -> the worker holding the server side of that connection (absent: not accepted yet)."""
    inode_of = {
        remote: inode for local, remote, state, inode in _tcp() if local == api_port and state == "01"
    }
    held = {inode: w for w in workers for target in _fds(w) if target.startswith("socket:[")
            for inode in [target[8:-1]]}  # fmt: skip
    return {p: held[inode_of[p]] for p in client_ports if inode_of.get(p) in held}


# ------------------------------------------------------------------------------------------ HTTP


def _request(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}],
                            "max_tokens": TOKENS, "stream": stream}  # fmt: skip
    if stream:
        body["stream_options"] = {"include_usage": True}
    data = json.dumps(body, ensure_ascii=False).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            f"Connection: close\r\nContent-Length: {len(data)}\r\n\r\n").encode()  # fmt: skip
    return head + data


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


def _answer(raw: bytes, stream: bool) -> tuple[int, str, int, str | None]:
    """(status, text, completion tokens from usage, finish reason) of one raw HTTP response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    if status != 200:
        return status, body.decode(errors="replace"), 0, None
    if not stream:
        data = json.loads(body)
        choice = data["choices"][0]
        return (
            status,
            choice["message"]["content"],
            data["usage"]["completion_tokens"],
            choice["finish_reason"],
        )
    events = [e.removeprefix(b"data: ") for e in body.split(b"\n\n") if e.strip()]
    assert events[-1] == b"[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    reasons = [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    return status, text, chunks[-1]["usage"]["completion_tokens"], reasons[-1] if reasons else None


async def _held_then_answered(url: str, model: str, workers: list[int]) -> tuple[dict[int, int], list[Any]]:
    """Open connections with their bodies one byte short until both workers hold some (and at least
    MIN_HELD are open), then finish them all at once. Returns (worker -> connections it held, answers in order)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    api_port = int(port)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes, bool]] = []
    owner: dict[int, int] = {}
    deadline = time.monotonic() + 300  # a bound against hangs only
    while len(conns) < MIN_HELD or len(set(owner.values())) < 2:
        assert len(conns) < MAX_HELD, f"all {len(conns)} connections went to worker {set(owner.values())}"
        stream = len(conns) % 2 == 1
        request = _request(model, stream)
        reader, writer = await asyncio.open_connection(host, api_port)
        writer.write(request[:-1])
        await writer.drain()
        conns.append((reader, writer, request, stream))
        mine = writer.get_extra_info("sockname")[1]
        # Wait for this connection to be accepted, so each new one races both workers afresh.
        while mine not in owner:
            owner.update(_owners(api_port, [mine], workers))
            assert time.monotonic() < deadline, "a held connection was never accepted"
            if mine not in owner:
                await asyncio.sleep(0.01)

    async def finish(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, stream: bool
    ) -> Any:
        writer.write(request[-1:])
        await writer.drain()
        raw = await reader.read(-1)
        writer.close()
        return _answer(raw, stream)

    answers = await asyncio.gather(*(finish(*c) for c in conns))
    held = {w: sum(1 for o in owner.values() if o == w) for w in workers}
    return held, answers


def _model(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url + "/v1/models", timeout=60) as response:
        name: str = json.loads(response.read())["data"][0]["id"]
        return name


# ------------------------------------------------------------------------------------------ tests


def test_two_workers_each_serve_and_stop_leaves_nothing(triton: Served, tmp_path: Path) -> None:
    server, repo = triton
    # ApiLaunch is what `serve --openai-workers` starts: `swallow-trt openai --workers 2` in a child.
    launch = ApiLaunch(repo, port=free_port(), workers=2, log_path=tmp_path / "api.log")
    api = launch.start(server.grpc_url)
    try:
        workers = _workers(api.pid, launch.port)
        held, answers = asyncio.run(_held_then_answered(api.url, _model(api.url), workers))
        assert all(n > 0 for n in held.values()), held
        expected = answers[0]
        assert expected[0] == 200, expected
        assert expected[2:] == (TOKENS, "length")
        assert expected[1]
        assert answers == [expected] * len(answers)
        streamed = sum(1 for i in range(len(answers)) if i % 2 == 1)
        print(f"{len(answers)} requests ({streamed} streamed), held per worker: {held}")
    finally:
        api.stop()
    assert _group_ends(api.pid) == []
    assert _live(workers) == []


@pytest.mark.parametrize(
    ("sig", "whole_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigterm-to-parent", "ctrl-c-to-group"],
)
def test_signal_ends_the_workers(
    triton: Served, tmp_path: Path, sig: signal.Signals, whole_group: bool
) -> None:
    server, repo = triton
    port = free_port()
    api = start_api_process(server.grpc_url, repo, port=port, workers=2, log_path=tmp_path / "api.log")
    try:
        workers = _workers(api.pid, port)
        (os.killpg if whole_group else os.kill)(api.pid, sig)
        code = api.proc.wait(timeout=120)  # a bound against hangs only
        # Joined by the parent before it exited (the test sent the workers nothing on SIGTERM).
        assert _live(workers) == []
        # multiprocessing's resource tracker ends by itself once the parent's end of its pipe closes.
        assert _group_ends(api.pid) == [], api.log_tail()
        assert code == 0, api.log_tail()
        assert "Traceback" not in api.log_path.read_text(errors="replace")
    finally:
        api.stop()


def test_serve_openai_workers(tmp_path: Path) -> None:
    """``swallow-trt serve --openai-workers 2``: the API child runs two workers that answer the real
    ``openai`` client; Ctrl-C ends serve, Triton, the API and its workers."""
    from tests.fixtures.repos import SCHEDULE_ZERO_DELAY
    from tests.fixtures.schedule_repo import schedule_repo

    # A repository of its own, so that what outlives serve is found by its path.
    repo = schedule_repo(tmp_path / "own", SCHEDULE_ZERO_DELAY)
    api_port = free_port()
    env = dict(os.environ, SWALLOW_TRT_HOME=str(tmp_path))
    serve = subprocess.Popen(
        [sys.executable, "-m", "swallow_trt.cli.main", "serve", "--repo", str(repo), "--grpc-port",
         str(free_port()), "--http-port", str(free_port()), "--metrics-port", str(free_port()),
         "--openai-port", str(api_port), "--openai-workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(serve.stderr or ()), daemon=True)
    reader.start()
    api_pid, workers = 0, []
    try:
        assert serve.stdout is not None
        seen = []
        for line in serve.stdout:
            seen.append(line)
            if line.startswith("try: swallow-trt chat"):
                break
        base = f"http://127.0.0.1:{api_port}/v1"
        assert any(line.split() == ["openai", base] for line in seen), (seen, errors)
        api_pid = _api_child(serve.pid)
        workers = _workers(api_pid, api_port)
        client = openai.OpenAI(base_url=base, api_key="none", max_retries=0, timeout=300)
        model = client.models.list().data[0].id
        whole = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=TOKENS
        )
        assert whole.usage is not None
        assert whole.usage.completion_tokens == TOKENS
    finally:
        serve.send_signal(signal.SIGINT)
        serve.communicate(timeout=120)
        reader.join(10)
    assert serve.returncode == 0, "".join(errors)
    assert _group_ends(serve.pid) == []
    assert _group_ends(api_pid) == []
    assert _live(workers) == []
    left = subprocess.run(["pgrep", "-f", str(repo)], capture_output=True, text=True)
    assert left.stdout.strip() == "", "a server, stub, the API or a worker outlived serve"


def _api_child(serve_pid: int) -> int:
    """The ``swallow-trt openai`` child of ``serve`` (its own session: its pid is its group's id)."""
    found = []
    for pid in _children(serve_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"openai" in argv:
            found.append(pid)
    assert len(found) == 1, found
    return found[0]
