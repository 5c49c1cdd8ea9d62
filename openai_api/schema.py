"""The request bodies of ``/v1/chat/completions`` and ``/v1/completions`` (pydantic, strict, no extra
fields), and :func:`parse` that turns any body into a request or an :class:`ApiError` naming the field.

Fields the server cannot honour are accepted at their default value only (``n`` 1, ``logprobs`` false,
no ``tools``): any other value is a 400 naming the field, as is an unknown field (OpenAI's own
behaviour), so a client never gets a silent approximation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swallow_trt.openai_api.errors import ApiError, invalid

UINT64_MAX = 2**64 - 1
MAX_STOPS = 16
# Within int32 for the engine's request_output_len.
MAX_TOKENS_LIMIT = 2**31 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None  # accepted and ignored, as the chat formats have no speaker names

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class JsonSchema(_Strict):
    name: str = "response"
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


Temperature = Annotated[float | None, Field(ge=0, le=2)]
Penalty = Annotated[float | None, Field(ge=-2, le=2)]


class _Sampling(_Strict):
    model: str
    max_tokens: Annotated[int | None, Field(ge=1, le=MAX_TOKENS_LIMIT)] = None
    temperature: Temperature = None
    top_p: Annotated[float | None, Field(gt=0, le=1)] = None
    # Not OpenAI's, but vLLM's and TensorRT-LLM's: -1 and 0 are off.
    top_k: Annotated[int | None, Field(ge=-1, le=2**31 - 1)] = None
    seed: Annotated[int | None, Field(ge=0, le=UINT64_MAX)] = None
    presence_penalty: Penalty = None
    frequency_penalty: Penalty = None
    repetition_penalty: Annotated[float | None, Field(gt=0, le=100)] = None
    min_tokens: Annotated[int | None, Field(ge=0, le=MAX_TOKENS_LIMIT)] = None
    # vLLM's extension, as the chat model's input: no end token and no family stop word ends the
    # output, so a benchmark (``swallow-trt profile --api openai``, AIPerf) can force its length.
    ignore_eos: bool = False
    stop: str | Annotated[list[str], Field(max_length=MAX_STOPS)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    user: str | None = None
    logprobs: Any = None
    logit_bias: dict[str, Any] | None = None
    response_format: ResponseFormat | None = None

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int | None, Field(ge=1, le=MAX_TOKENS_LIMIT)] = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


Request = TypeVar("Request", bound=_Sampling)

# Field -> (values the server honours besides None, what to say otherwise).
UNSUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "n": ((1,), "only n=1 is supported"),
    "logprobs": ((False, 0), "logprobs are not supported"),
    "top_logprobs": ((0,), "top_logprobs are not supported"),
    "logit_bias": (({},), "logit_bias is not supported"),
    "tools": (([],), "tools are not supported"),
    "tool_choice": (("none", "auto"), "tool_choice is not supported"),
    "parallel_tool_calls": ((False, True), "parallel_tool_calls is not supported"),
    "echo": ((False,), "echo is not supported"),
    "suffix": (("",), "suffix is not supported"),
    "best_of": ((1,), "only best_of=1 is supported"),
}


def _param(loc: tuple[Any, ...]) -> str | None:
    # pydantic names the union member it tried ("str", "list[...]", "function-after[...]"): the client
    # only wants the path through its own body.
    parts = [
        str(p)
        for p in loc
        if isinstance(p, int) or not (p[:1].islower() and ("[" in p or p in {"str", "int", "float", "bool"}))
    ]
    return ".".join(parts) or None


def _error(exc: ValidationError) -> ApiError:
    errors = exc.errors(include_url=False)
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        names = sorted({_param(e["loc"]) or "?" for e in extra})
        return invalid(f"Unrecognized request argument supplied: {', '.join(names)}", names[0])
    first = errors[0]
    if first["type"] == "json_invalid":
        return invalid(
            f"We could not parse the JSON body of your request ({first['msg']}); send a JSON object",
            code="invalid_json",
        )
    if first["type"] in {"model_type", "model_attributes_type"} and not first["loc"]:
        return invalid("The request body must be a JSON object", code="invalid_json")
    param = _param(first["loc"])
    # Unions report one error per member; the first names the field well enough.
    message = str(first["msg"])
    if first["type"] == "missing":
        return invalid(f"Missing required parameter: '{param}'", param, "missing_required_parameter")
    return invalid(f"Invalid value for '{param}': {message}", param, "invalid_value")


def parse(model: type[Request], body: bytes) -> Request:
    """The request in ``body`` (JSON bytes), or an ApiError (400) naming the field at fault."""
    try:
        request = model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise _error(exc) from None
    except (ValueError, RecursionError):  # pathological nesting
        raise invalid("We could not parse the JSON body of your request", code="invalid_json") from None
    for name, (honoured, message) in UNSUPPORTED.items():
        value = getattr(request, name, None)
        # ``True == 1`` in Python: a bool is only honoured where it is listed as one.
        if value is not None and not any(value == h and type(value) is type(h) for h in honoured):
            raise invalid(message, name, "unsupported_parameter")
    if request.stream_options is not None and not request.stream:
        raise invalid("stream_options is only allowed when stream is true", "stream_options")
    if any(not s for s in request.stops()):
        raise invalid("stop strings must not be empty", "stop")
    return request
