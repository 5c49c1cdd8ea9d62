"""Guided decoding with xgrammar, as the TensorRT-LLM backend does it, for the package step and the
reference backend.

The tokenizer info file is what upstream's ``examples/generate_xgrammar_tokenizer_info.py`` writes (through
``tensorrt_llm.llmapi.tokenizer._xgrammar_tokenizer_info``) and what the C++ backend parses at load
(``model_instance_state.cc``): a JSON object with ``encoded_vocab`` (the vocabulary ordered by id),
``tokenizer_str`` (the fast tokenizer's backend JSON) and ``stop_token_ids``. The reference backend
builds its ``xgrammar.TokenizerInfo`` from the same file the way the C++ guided decoder does
(``guidedDecoder.cpp``: vocab type and prefix space detected from ``tokenizer_str``, the vocabulary
size of the logits), so both backends constrain the same tokens. One difference, on purpose: a JSON
schema compiles to compact JSON here (no free whitespace between tokens); the C++ backend compiles it
with xgrammar's default, which allows it. Both give JSON that validates against the schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swallow_trt.errors import UsageError

GUIDE_TYPES = ("json", "json_schema", "regex", "ebnf_grammar")
TOKENIZER_INFO_FILE = "xgrammar_tokenizer_info.json"


def tokenizer_info(tokenizer: Any, stop_token_ids: list[int]) -> dict[str, Any]:
    """Upstream's tokenizer-info JSON of a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        # The C++ backend reads tokenizer_str unconditionally; only a fast tokenizer has one.
        raise UsageError(
            f"guided decoding needs a fast tokenizer (tokenizer.json), got {type(tokenizer).__name__}",
            "pass --tokenizer DIR holding the model's tokenizer.json",
        )
    vocab = tokenizer.get_vocab()
    return {
        "encoded_vocab": [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])],
        "tokenizer_str": tokenizer.backend_tokenizer.to_str(),
        "stop_token_ids": stop_token_ids,
    }


def write_tokenizer_info(tokenizer_dir: Path, path: Path, end_id: int | None) -> Path:
    """Write the tokenizer info of ``tokenizer_dir``. Stop tokens: the EOS (upstream's choice) and the
    repository's end token, which for instruct models is the end-of-turn token, not the EOS: without it
    a finished grammar could never end the generation."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)  # type: ignore[no-untyped-call]
    stops = [t for t in (tok.eos_token_id, end_id) if isinstance(t, int)]
    info = tokenizer_info(tok, list(dict.fromkeys(stops)))
    path.write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    return path


@dataclass
class Guides:
    """Compiles guides against one tokenizer info (cached per guide) and makes matchers for requests."""

    info_path: Path
    vocab_size: int
    _compiler: Any = None
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    def compiler(self) -> Any:
        if self._compiler is None:
            import xgrammar as xgr

            data = json.loads(self.info_path.read_text(encoding="utf-8"))
            meta = xgr.TokenizerInfo._detect_metadata_from_hf(data["tokenizer_str"])
            info = xgr.TokenizerInfo(
                data["encoded_vocab"],
                xgr.VocabType(meta["vocab_type"]),
                vocab_size=self.vocab_size,
                stop_token_ids=[int(t) for t in data["stop_token_ids"]],
                add_prefix_space=bool(meta["add_prefix_space"]),
            )
            self._compiler = xgr.GrammarCompiler(info)
        return self._compiler

    def compile(self, guide_type: str, guide: str | None) -> Any:
        """The compiled grammar; ValueError with xgrammar's reason when the guide does not compile."""
        key = (guide_type, guide or "")
        if key not in self._cache:
            c = self.compiler()
            try:
                if guide_type == "json":
                    compiled = c.compile_builtin_json_grammar()
                elif guide_type == "json_schema":
                    # Compact JSON (xgrammar's default allows any whitespace between tokens, and a
                    # greedy or small model can then emit blanks until max_tokens, never closing it).
                    compiled = c.compile_json_schema(guide, any_whitespace=False)
                elif guide_type == "regex":
                    compiled = c.compile_regex(guide)
                elif guide_type == "ebnf_grammar":
                    compiled = c.compile_grammar(guide)
                else:
                    raise ValueError(f"unknown guided_decoding_guide_type {guide_type!r}")
            except (RuntimeError, ValueError, TypeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ValueError(f"{guide_type} guide does not compile: {first}") from None
            self._cache[key] = compiled
        return self._cache[key]

    def matcher(self, guide_type: str, guide: str | None, end_id: int | None) -> GuidedMatcher:
        import xgrammar as xgr

        compiled = self.compile(guide_type, guide)
        # The request's end token is the one the grammar may end on; without one (end_id -1) the
        # grammar's completion itself ends the request.
        matcher = xgr.GrammarMatcher(
            compiled,
            override_stop_tokens=[end_id] if end_id is not None else None,
            terminate_without_stop_token=end_id is None,
        )
        return GuidedMatcher(matcher, xgr.allocate_token_bitmask(1, self.vocab_size), self.vocab_size)


@dataclass
class GuidedMatcher:
    matcher: Any
    bitmask: Any
    vocab_size: int

    def mask(self, logits: Any) -> Any:
        """``logits`` [vocab] with every token the grammar forbids at -inf (in place where possible)."""
        import xgrammar as xgr

        self.matcher.fill_next_token_bitmask(self.bitmask)
        row = logits.reshape(1, -1)
        if row.device.type != "cpu":
            row = row.cpu()
        row = row[:, : self.vocab_size].contiguous()
        xgr.apply_token_bitmask_inplace(row, self.bitmask)
        return row.reshape(-1).to(logits.device)

    def accept(self, token: int) -> None:
        if not self.matcher.accept_token(token):
            raise ValueError(f"token {token} breaks the guide")

    @property
    def done(self) -> bool:
        return bool(self.matcher.is_terminated())
