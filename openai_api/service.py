"""The text side of one request, in-process: render the family's chat format, tokenize with the
repository's tokenizer, build ``tensorrt_llm``'s inputs (sampling mapped and checked by
``triton_repo.sampling``), then turn its streamed ids into text with the incremental detokeniser and the
stop-string filter, counting tokens as the engine sends them (``usage`` is never a re-tokenisation).

Reasoning models (Qwen3-Swallow, GPT-OSS-Swallow): the thinking is returned apart from the answer, as
``reasoning_content`` and ``reasoning`` (text.reasoning's splitter works on the token ids, so harmony's
special-token channel markers are seen), with the answer alone in ``content``.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from swallow_trt.openai_api.deployment import Deployment
from swallow_trt.openai_api.engine import Engine, Generation
from swallow_trt.openai_api.errors import ApiError, invalid
from swallow_trt.openai_api.schema import ChatRequest, CompletionRequest

ROLE_OF = {"developer": "system"}  # OpenAI's newer name for the system turn


def _fields(reasoning: str, content: str) -> list[tuple[str, str]]:
    """A message delta's fields: reasoning under both names clients read (``reasoning_content``, and
    ``reasoning``, the name vLLM moved to), the answer in ``content``."""
    out = [("reasoning_content", reasoning), ("reasoning", reasoning)] if reasoning else []
    return [*out, ("content", content)] if content else out


@dataclass
class Prepared:
    """A checked request, ready for the engine."""

    kind: str  # "chat" or "completion"
    model: str
    ids: list[int]
    max_tokens: int
    stops: list[str]
    inputs: list[tuple[str, Any]]
    stream: bool
    include_usage: bool
    request_id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class Outcome:
    """What a finished (or running) generation has produced so far."""

    completion_tokens: int = 0
    finish_reason: str | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    on_first: Callable[[], None] | None = None


class TextService:
    """Everything the routes need besides HTTP: the deployment, its tokenizer and the engine."""

    def __init__(self, deployment: Deployment, engine: Engine, tokenizer: Any | None = None) -> None:
        from swallow_trt.text.pipeline import Prompter

        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(deployment.tokenizer_dir))  # type: ignore[no-untyped-call]
        self.d = deployment
        self.engine = engine
        self.prompter = Prompter(
            tokenizer=tokenizer,
            chat_format=deployment.chat_format,
            system_prompt=deployment.system_prompt,
            end_id=deployment.end_id,
            stop_words=list(deployment.stop_words),
            max_input_len=deployment.max_input_len,
            default_max_tokens=deployment.default_max_tokens,
        )
        self._ids = itertools.count()
        self._prefix = f"oai-{os.getpid()}-{secrets.token_hex(4)}"

    # ------------------------------------------------------------------------------------ preparing

    def _check_model(self, name: str) -> None:
        if not self.d.accepts(name):
            known = ", ".join([self.d.model_id, *self.d.aliases])
            raise ApiError(
                404,
                f"The model '{name}' does not exist; this server serves {known}",
                param="model",
                code="model_not_found",
            )

    def _prompt_ids(self, request: ChatRequest | CompletionRequest) -> list[int]:
        from swallow_trt.errors import UsageError
        from swallow_trt.text.chat import Message, adds_bos, render

        tok = self.prompter.tokenizer
        if isinstance(request, CompletionRequest):
            text = request.prompt_text()
            if not text:
                raise invalid("prompt must not be empty", "prompt")
            ids: list[int] = tok.encode(text, add_special_tokens=True)
            return ids
        messages = [Message(ROLE_OF.get(m.role, m.role), m.text()) for m in request.messages]  # type: ignore[arg-type]
        if messages[0].role != "system" and self.d.system_prompt:
            messages.insert(0, Message("system", self.d.system_prompt))
        if any(m.role == "system" for m in messages[1:]):
            raise invalid("only the first message may be a system message", "messages")
        try:
            prompt = render(self.d.chat_format, messages, default_system=None)
        except UsageError as exc:
            raise invalid(exc.message, "messages") from None
        if not prompt.strip():
            raise invalid("the rendered prompt is empty", "messages")
        ids = tok.encode(prompt, add_special_tokens=adds_bos(self.d.chat_format))
        return ids

    def _guide(self, request: ChatRequest | CompletionRequest) -> dict[str, Any]:
        fmt = request.response_format
        if fmt is None or fmt.type == "text":
            return {}
        if not self.d.guided:
            raise invalid(
                "response_format needs guided decoding, which this repository has off "
                "(guided_decoding_backend is empty); package it again to turn it on",
                "response_format",
            )
        if fmt.type == "json_object":
            return {"guided_decoding_guide_type": "json"}
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise invalid("response_format json_schema needs json_schema.schema", "response_format")
        return {
            "guided_decoding_guide_type": "json_schema",
            "guided_decoding_guide": json.dumps(fmt.json_schema.schema_, ensure_ascii=False),
        }

    def _sampling_inputs(self, request: ChatRequest | CompletionRequest) -> list[tuple[str, Any]]:
        """The sampling and guided-decoding inputs, checked by the same code as the chat model's."""
        import numpy as np

        from swallow_trt.text.pipeline import RequestError
        from swallow_trt.triton_repo.sampling import request_options

        top_k = request.top_k if request.top_k not in (None, -1) else None
        top_p = request.top_p
        # OpenAI samples unless temperature is 0 (default 1); TensorRT-LLM decodes greedily when neither
        # top_k nor top_p is set, so an OpenAI request that sets neither gets top_p 1 (no cut-off).
        if request.temperature != 0 and not top_k and top_p is None:
            top_p = 1.0
        given: dict[str, Any] = {
            "temperature": request.temperature,
            "runtime_top_k": top_k,
            "runtime_top_p": top_p,
            "seed": request.seed,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
            "repetition_penalty": request.repetition_penalty,
            **self._guide(request),
        }
        from swallow_trt.triton_repo.configs import SAMPLING_TO_LLM

        outer_of = {llm: outer for outer, llm in SAMPLING_TO_LLM.items()}
        by_outer = {outer_of[k]: v for k, v in given.items() if v is not None}
        try:
            options = request_options(
                lambda name: None if name not in by_outer else np.array([by_outer[name]])
            )
        except RequestError as exc:
            raise invalid(str(exc)) from None
        return options

    def prepare(self, request: ChatRequest | CompletionRequest) -> Prepared:
        import numpy as np

        self._check_model(request.model)
        ids = self._prompt_ids(request)
        param = "messages" if isinstance(request, ChatRequest) else "prompt"
        if self.d.max_input_len and len(ids) > self.d.max_input_len:
            raise invalid(
                f"This model's maximum input length is {self.d.max_input_len} tokens; your prompt is "
                f"{len(ids)} tokens",
                param,
                "context_length_exceeded",
            )
        room = self.d.max_seq_len - len(ids)
        asked, name = request.max_tokens, "max_tokens"
        if isinstance(request, ChatRequest) and request.max_completion_tokens is not None:
            asked, name = request.max_completion_tokens, "max_completion_tokens"
        if room < 1:
            raise invalid(
                f"This model's maximum sequence length is {self.d.max_seq_len} tokens; your prompt is "
                f"{len(ids)} tokens, leaving none to generate",
                param,
                "context_length_exceeded",
            )
        if asked is not None and asked > room:
            raise invalid(
                f"{name} is {asked}, but this model's maximum sequence length is {self.d.max_seq_len} "
                f"tokens and the prompt takes {len(ids)}: at most {room}",
                name,
                "context_length_exceeded",
            )
        max_tokens = room if asked is None else asked
        min_tokens = request.min_tokens or 0
        if min_tokens > max_tokens:
            raise invalid(f"min_tokens {min_tokens} exceeds the max tokens {max_tokens}", "min_tokens")
        stops = request.stops()
        # ignore_eos as the chat model takes it: the family's stop words are its end-of-turn tokens.
        family = [] if request.ignore_eos else list(self.d.stop_words)
        end_id = -1 if request.ignore_eos or self.d.end_id is None else self.d.end_id
        inputs = [
            ("input_ids", np.array([ids], dtype=np.int32)),
            ("input_lengths", np.array([[len(ids)]], dtype=np.int32)),
            ("request_output_len", np.array([[max_tokens]], dtype=np.int32)),
            ("streaming", np.array([[True]], dtype=bool)),
            ("end_id", np.array([[end_id]], dtype=np.int32)),
            ("min_tokens", np.array([[min_tokens]], dtype=np.int32)),
            ("stop_words_list", self.prompter.stop_words_array(stops, family)),
            *self._sampling_inputs(request),
        ]
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return Prepared(
            kind="chat" if isinstance(request, ChatRequest) else "completion",
            model=request.model,
            ids=ids,
            max_tokens=max_tokens,
            stops=[*family, *stops],
            inputs=inputs,
            stream=request.stream,
            include_usage=include_usage,
            request_id=f"{self._prefix}-{next(self._ids)}",
        )

    # ------------------------------------------------------------------------------------ generating

    def start(self, prepared: Prepared) -> Generation:
        return self.engine.generate(prepared.request_id, prepared.inputs)

    async def pieces(
        self, prepared: Prepared, generation: Generation, outcome: Outcome
    ) -> AsyncIterator[list[tuple[str, str]]]:
        """The delta fields of each piece of new text; ``outcome`` is kept current. Responses that
        arrived together make one piece, each still counted, split and checked for stop strings in turn,
        so the text, the counts and where a stop string ends it do not depend on how they were grouped.
        Ends the engine's generation when a stop string is seen; on any early exit (the client went away)
        the caller's ``generation.stop()`` ends it."""
        from swallow_trt.text.pipeline import StopFilter
        from swallow_trt.text.reasoning import ReasoningSplitter

        # The splitter is the incremental detokeniser, per destination: a reasoning family's thinking
        # (Qwen3's <think> block, gpt-oss's analysis channel) goes to reasoning_content, the answer alone
        # to content; other formats (and raw completions) come out as the detokeniser's text.
        fmt = self.d.chat_format if prepared.kind == "chat" else "none"
        split = ReasoningSplitter.for_prompt(self.prompter.tokenizer, fmt, prepared.ids)
        filt = StopFilter(prepared.stops)  # stop strings apply to the answer only
        async for batch in generation.tokens():
            now = time.perf_counter()
            if outcome.first_token_at is None:
                outcome.first_token_at = now
                if outcome.on_first is not None:
                    outcome.on_first()
            outcome.last_token_at = now
            reasoning = content = ""
            for tokens in batch:
                outcome.completion_tokens += len(tokens)
                delta = split.push(tokens)
                if delta.reasoning and content:  # reasoning after answer text: keep the order
                    yield _fields(reasoning, content)
                    reasoning = content = ""
                reasoning += delta.reasoning
                content += filt.feed(delta.content)
                if filt.stopped:
                    break
            out = _fields(reasoning, content)
            if out:
                yield out
            if filt.stopped:
                generation.stop()
                break
        if not filt.stopped:
            rest = split.flush()
            out = _fields(rest.reasoning, filt.feed(rest.content) + filt.close())
            if out:
                yield out
        stopped_early = filt.stopped or outcome.completion_tokens < prepared.max_tokens
        outcome.finish_reason = "stop" if stopped_early else "length"
