"""Streaming chat client over gRPC (tritonclient), for ``swallow-trt chat`` and scripts."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any, Final

from swallow_trt.errors import EnvironmentProblem, StageFailed, UsageError

ENCODING_HINT = "set a UTF-8 locale and terminal (e.g. LANG=C.UTF-8), or pass --encoding with your terminal's (e.g. --encoding shift_jis)"


def check_grpc_url(url: str, flag: str = "--url") -> None:
    """``HOST:PORT`` with a port number, as tritonclient's gRPC client wants it (no scheme)."""
    host, sep, port = url.rpartition(":")
    if (
        not sep
        or not host
        or "://" in url
        or any(c.isspace() for c in url)
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        raise UsageError(
            f"{flag} {url!r} is not HOST:PORT", f"e.g. {flag} 127.0.0.1:8001 (Triton's gRPC port)"
        )


def check_encoding(encoding: str | None) -> None:
    import codecs

    if encoding is None:
        return
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UsageError(
            f"unknown --encoding {encoding!r}", "e.g. --encoding utf-8, shift_jis, cp932 or euc_jp"
        ) from None


def _undecodable(what: str, encoding: str, exc: UnicodeDecodeError) -> UsageError:
    data = exc.object[exc.start : exc.end]
    where = f" (byte {' '.join(f'0x{b:02x}' for b in data[:4])} at offset {exc.start})" if data else ""
    return UsageError(f"{what} is not valid {encoding} text{where}", ENCODING_HINT)


def argument_text(value: str, what: str, encoding: str | None = None) -> str:
    """A command-line argument as text. Python decodes argv with the locale's encoding and keeps bytes it
    cannot decode as lone surrogates, which would fail only when the request is encoded: report them here.
    With ``encoding``, the argument's original bytes are decoded with it instead."""
    import os
    import sys

    if encoding is None:
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            encoding = sys.getfilesystemencoding()  # decoded again below, strictly, to name the bad bytes
    try:
        return os.fsencode(value).decode(encoding)
    except UnicodeDecodeError as exc:
        raise _undecodable(what, encoding, exc) from None


def read_text_line(stream: Any, what: str, encoding: str | None = None) -> str | None:
    """One line of a text stream (stdin) decoded strictly, without its newline; None at end of input."""
    raw_stream = getattr(stream, "buffer", None)
    if raw_stream is None:  # already text (e.g. io.StringIO)
        line: str = stream.readline()
        return line.removesuffix("\n") if line else None
    raw: bytes = raw_stream.readline()
    if not raw:
        return None
    name = encoding or getattr(stream, "encoding", None) or "utf-8"
    try:
        return raw.decode(name).removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError as exc:
        raise _undecodable(what, name, exc) from None


REASONING: Final = "reasoning"
ANSWER: Final = "answer"


def stream_chat(url: str, text: str, **options: Any) -> Iterator[str]:
    """Yield the answer's text pieces as the server streams them (a reasoning model's reasoning is left
    out: :func:`stream_chat_parts` has it); raise StageFailed on an error response. Options as
    :func:`stream_chat_parts`."""
    for kind, piece in stream_chat_parts(url, text, **options):
        if kind == ANSWER:
            yield piece


def served_config(client: Any, model: str) -> Any:
    """A served model's config (``ModelConfig``), None if the server does not give it."""
    from tritonclient.utils import InferenceServerException

    try:
        return client.get_model_config(model).config
    except InferenceServerException:
        return None


def served_chat_format(config: Any) -> str | None:
    """The chat format a served ``chat`` model renders (its config's ``chat_format``), None if unknown."""
    param = None if config is None else config.parameters.get("chat_format")
    return param.string_value if param is not None else None


# While a stream waits for its next response, the serving stub is checked this often (chat's docstring).
STUB_CHECK_S = 0.25


def stream_chat_parts(
    url: str,
    text: str,
    *,
    model: str = "chat",
    max_tokens: int | None = None,
    system_prompt: str | None = None,
    stop: list[str] | None = None,
    history: list[tuple[str, str]] | None = None,
    thinking: bool | None = None,
    reasoning_effort: str | None = None,
    timeout_s: float = 300.0,
    on_instance: Callable[[str], None] | None = None,
) -> Iterator[tuple[str, str]]:
    """Yield ``(REASONING | ANSWER, text)`` pieces as the server streams them; raise StageFailed on an
    error response. ``history``: earlier turns, oldest first, as (role, content) with role "user" or
    "assistant" (an answer without its reasoning, as the chat formats render earlier turns).
    ``thinking`` (Qwen3: on/off) and ``reasoning_effort`` (gpt-oss: low|medium|high) are checked against
    the served model's chat format first: UsageError if it cannot honour them. A model that names the
    stub serving the request (``chat``: ``report_instance``) is held to it: when that stub dies, the
    request ends with StageFailed at once instead of waiting for ever (Triton 2.51 never ends it);
    ``on_instance`` is called with its token (``triton_repo.stubs.process_token``)."""
    import json

    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    try:
        client = grpcclient.InferenceServerClient(url)
        if not client.is_server_live():
            raise InferenceServerException("server is not live")
    except InferenceServerException as exc:
        raise EnvironmentProblem(
            f"cannot reach Triton at {url}: {exc}", "start it with `swallow-trt serve --repo REPO`"
        ) from None

    config = served_config(client, model)
    if thinking is not None or reasoning_effort is not None:
        from swallow_trt.text.chat import check_reasoning

        chat_format = served_chat_format(config)
        if chat_format is not None:
            check_reasoning(chat_format, thinking, reasoning_effort)

    def tensor(name: str, values: list[Any], dtype: str, np_dtype: Any) -> Any:
        t = grpcclient.InferInput(name, [len(values)], dtype)
        t.set_data_from_numpy(np.array(values, dtype=np_dtype))
        return t

    inputs = [tensor("text_input", [text.encode("utf-8")], "BYTES", object)]
    if max_tokens is not None:
        inputs.append(tensor("max_tokens", [max_tokens], "INT32", np.int32))
    if system_prompt is not None:
        inputs.append(tensor("system_prompt", [system_prompt.encode("utf-8")], "BYTES", object))
    if history:
        turns = [{"role": role, "content": content} for role, content in history]
        inputs.append(tensor("history", [json.dumps(turns, ensure_ascii=False).encode()], "BYTES", object))
    if stop:
        inputs.append(tensor("stop", [s.encode("utf-8") for s in stop], "BYTES", object))
    if thinking is not None:
        inputs.append(tensor("enable_thinking", [thinking], "BOOL", bool))
    if reasoning_effort is not None:
        inputs.append(tensor("reasoning_effort", [reasoning_effort.encode()], "BYTES", object))
    # A model that names its serving stub (chat, from this release on) does so in its first response.
    reports = config is not None and any(i.name == "report_instance" for i in config.input)
    if reports:
        inputs.append(tensor("report_instance", [True], "BOOL", bool))
    callback: Callable[[Any, Any], None] = lambda result, error: results.put((result, error))  # noqa: E731
    client.start_stream(callback=callback)
    finished = False
    serving: str | None = None  # the stub's token
    try:
        client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        while True:
            result, error = _next_response(results, model, timeout_s, serving)
            if error is not None:
                raise StageFailed(f"{model} answered with an error: {error}", "check the request")
            if reports and serving is None:
                token = result.as_numpy("instance")
                serving = token.reshape(-1)[0].decode() if token is not None else None
                if serving is not None and on_instance is not None:
                    on_instance(serving)
            for name, kind in (("reasoning_output", REASONING), ("text_output", ANSWER)):
                out = result.as_numpy(name)
                piece = out.reshape(-1)[0].decode("utf-8") if out is not None else ""
                if piece:
                    yield kind, piece
            if result.get_response().parameters["triton_final_response"].bool_param:
                finished = True
                return
    finally:
        # A stream left open (error, timeout, Ctrl-C, a caller that stopped reading) is cancelled: a plain
        # stop_stream() would wait for a server that may never answer, and the server stops generating.
        client.stop_stream(cancel_requests=not finished)
        client.close()


def _next_response(
    results: queue.Queue[tuple[Any, Any]], model: str, timeout_s: float, serving: str | None
) -> tuple[Any, Any]:
    """The stream's next (result, error); StageFailed after ``timeout_s`` without one, or at once (within
    STUB_CHECK_S) when the stub ``serving`` names has died: Triton 2.51 would hold the request for ever."""
    import time

    from swallow_trt.triton_repo.stubs import process_gone, token_pid

    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            return results.get(timeout=max(0.0, min(left, STUB_CHECK_S if serving else left)))
        except queue.Empty:
            pass
        if serving is not None and process_gone(serving):
            raise StageFailed(
                f"the {model} instance serving this request died (stub pid {token_pid(serving)}) before the "
                "answer was complete",
                "send it again: the server reloads the model (see its log)",
            )
        if time.monotonic() >= deadline:
            raise StageFailed(f"no response from {model} within {timeout_s:g} s", "check the server log")
