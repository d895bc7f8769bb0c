"""A local GGUF model and the thread that generates with it, inside the engine process (engine/child.py).

llama.cpp contexts are not thread-safe, so each model has one worker thread that runs one job at a time;
jobs wait in its queue (the gateway bounds how many it sends: engine/supervisor.py). What a job produces
goes to its sink as it is made: the child writes it to the gateway.
"""

from __future__ import annotations

import codecs
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama, LogitsProcessorList
from llama_cpp.llama_grammar import LlamaGrammar

from kimi_gateway.engine.prompt import ChatTemplate
from kimi_gateway.engine.stops import StopMatcher
from kimi_gateway.logs import event

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None


# What a job produces, in order (the names are engine/protocol.py's frame types):
TEXT = "text"  # (TEXT, choice index, text)
FINISH = "finish"  # (FINISH, choice index, reason, completion tokens, the stop string matched or None)
DONE = "done"  # (DONE, prompt tokens, cached prompt tokens): the last message of every job
ERROR = "error"  # (ERROR, message): the last message of a job that failed

Sink = Callable[[tuple[Any, ...]], None]


@dataclass(eq=False)
class Job:
    tokens: list[int]
    params: SamplingParams
    max_tokens: int
    sink: Sink
    n: int = 1
    stop: list[str] = field(default_factory=list)
    grammar: LlamaGrammar | None = None
    logit_bias: dict[int, float] | None = None
    ignore_eos: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    request_id: str | None = None

    def cancel(self) -> None:
        self.cancelled.set()

    def emit(self, *message: Any) -> None:
        self.sink(message)


class LocalModel:
    def __init__(
        self,
        model_id: str,
        path: Path,
        *,
        max_context: int,
        n_threads: int | None,
        n_batch: int,
    ) -> None:
        self.model_id = model_id
        self.path = path
        self.max_context = max_context
        self._n_threads = n_threads
        self._n_batch = n_batch
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.llama: Llama | None = None
        self.template: ChatTemplate | None = None
        self.n_ctx = 0
        self._eog: list[int] = []

    # ---- lifecycle -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Blocking: call from a thread at start-up."""
        # A vocabulary-only load reads the metadata cheaply; the trained context length bounds the KV cache.
        probe = Llama(model_path=str(self.path), vocab_only=True, verbose=False)
        arch = probe.metadata.get("general.architecture", "")
        trained = int(probe.metadata.get(f"{arch}.context_length", 0) or 0)
        probe.close()
        n_ctx = min(self.max_context, trained) if trained else self.max_context
        llama = Llama(
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_batch=min(self._n_batch, n_ctx),
            n_threads=self._n_threads,
            verbose=False,
        )
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{self.path.name} has no chat template in its GGUF metadata")
        model = llama._model
        bos, eos = llama.token_bos(), llama.token_eos()
        self.template = ChatTemplate(
            template,
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            eos_token=model.token_get_text(eos) if eos != -1 else "",
        )
        vocab = model.vocab
        self._eog = [t for t in range(llama.n_vocab()) if llama_cpp.llama_token_is_eog(vocab, t)]
        self.llama = llama
        self.n_ctx = llama.n_ctx()
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.model_id}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        if self.llama is not None:
            self.llama.close()
            self.llama = None

    @property
    def ready(self) -> bool:
        return self.llama is not None

    # ---- used from the engine process's main thread ---------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        # Reading the vocabulary is safe beside a running generation.
        assert self.llama is not None
        tokens: list[int] = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return tokens

    def vocab_size(self) -> int:
        assert self.llama is not None
        return int(self.llama.n_vocab())

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    # ---- the worker thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                if job.cancelled.is_set():
                    job.emit(DONE, len(job.tokens), 0)  # cancelled while waiting: it still ends
                else:
                    self._generate(job)
            except Exception as exc:
                log.exception("local generation failed")
                job.emit(ERROR, f"local generation failed: {type(exc).__name__}")

    def _reusable_prefix(self, tokens: list[int]) -> int:
        """How many prompt tokens `Llama.generate` will take from the KV cache instead of evaluating."""
        llama = self.llama
        assert llama is not None
        if llama.n_tokens == 0:
            return 0
        cached_ids = llama._input_ids
        n = min(len(cached_ids), len(tokens))
        mismatch = np.flatnonzero(cached_ids[:n] != np.asarray(tokens[:n], dtype=cached_ids.dtype))
        common = int(mismatch[0]) if mismatch.size else n
        if common == len(tokens):
            if llama.n_tokens == len(tokens) and not llama._requires_eval:
                return common
            return common - 1  # the last prompt token is evaluated again to get fresh logits
        return common

    def _processors(self, job: Job) -> LogitsProcessorList | None:
        if not job.logit_bias and not job.ignore_eos:
            return None
        ids = np.array(list(job.logit_bias or {}), dtype=np.intc)
        bias = np.array(list((job.logit_bias or {}).values()), dtype=np.single)
        banned = np.array(self._eog if job.ignore_eos else [], dtype=np.intc)

        def adjust(_input_ids: Any, scores: Any) -> Any:
            if ids.size:
                scores[ids] += bias
            if banned.size:
                scores[banned] = -np.inf
            return scores

        return LogitsProcessorList([adjust])

    def _generate(self, job: Job) -> None:
        started = time.perf_counter()
        cached = self._reusable_prefix(job.tokens)
        processors = self._processors(job)
        produced, reasons = 0, []
        for index in range(job.n):
            if job.cancelled.is_set():
                break
            seed = job.params.seed + index if job.params.seed is not None else random.getrandbits(31)
            reason, tokens = self._choice(job, index, seed, processors)
            produced += tokens
            reasons.append(reason)
        job.emit(DONE, len(job.tokens), cached)
        event(
            "generation",
            request_id=job.request_id,
            model=self.model_id,
            prompt_tokens=len(job.tokens),
            cached_tokens=cached,
            completion_tokens=produced,
            finish_reasons=reasons,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def _choice(
        self, job: Job, index: int, seed: int, processors: LogitsProcessorList | None
    ) -> tuple[str, int]:
        llama = self.llama
        assert llama is not None
        llama.set_seed(seed)
        p = job.params
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(job.stop)
        eog = set(self._eog)
        produced = 0
        reason = "length"
        stopped_by_string = False
        tokens = llama.generate(
            job.tokens,
            temp=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            min_p=p.min_p,
            repeat_penalty=p.repeat_penalty,
            frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty,
            logits_processor=processors,
            grammar=job.grammar,
        )
        try:
            for token in tokens:
                if job.cancelled.is_set():
                    reason = "cancelled"
                    break
                if token in eog:
                    reason = "stop"
                    break
                produced += 1
                text = decoder.decode(llama.detokenize([token]))
                if text:
                    text, stopped_by_string = stops.feed(text)
                    if text:
                        job.emit(TEXT, index, text)
                    if stopped_by_string:
                        reason = "stop"
                        break
                if produced >= job.max_tokens:
                    break
        finally:
            tokens.close()
        if not stopped_by_string and reason != "cancelled":
            rest = stops.flush() + decoder.decode(b"", final=True)
            if rest:
                job.emit(TEXT, index, rest)
        job.emit(FINISH, index, reason, produced, stops.matched)
        return reason, produced
