"""A local GGUF model and the thread that generates with it, inside the engine process (engine/child.py).

llama.cpp contexts are not thread-safe, so one worker thread owns the model's context. It serves several
jobs at once, as llama-server does: the context holds `parallel` sequences (slots) in one KV cache, and
each step is one `llama_decode` of a batch that mixes the next token of every job that is generating with
chunks of the prompts still being read. So:

- a short request is read and answered while a long prompt is still being read (its chunks share the
  steps), and two users decoding share each forward pass;
- a step is kept short (prompts are read `prefill_chunk` tokens a step while others wait, twice that
  alone), and cancellation is
  checked between steps, so a cancelled job leaves the engine within a step whatever its prompt's length;
- a slot keeps its sequence's KV after its job ends: a later job whose prompt starts the same way (the same
  system prompt, the same document, the conversation so far) is given that slot and reads only the rest.

When the cache's cells run out, idle slots' caches go first, then the youngest running job is preempted:
its cells are freed and it reads its tokens again once there is room (vLLM's recompute preemption). The
oldest job can always finish, since the cache holds at least one full sequence.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import _internals as internals
from llama_cpp.llama_grammar import LlamaGrammar

from kimi_gateway.engine.prompt import ChatTemplate
from kimi_gateway.engine.protocol import (
    EngineSettings,
    Expired,
    Finished,
    JobDone,
    JobFailed,
    JobMessage,
    Text,
)
from kimi_gateway.engine.stops import StopMatcher
from kimi_gateway.errors import context_length_exceeded
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


# What a job produces goes to its sink, in order: engine/protocol.py's job messages.
Sink = Callable[[JobMessage], None]


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
    queued_at: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        self.cancelled.set()

    def emit(self, message: JobMessage) -> None:
        self.sink(message)


@dataclass(eq=False)
class _Run:
    """A job in a slot: the choice being generated and what the job has done so far."""

    job: Job
    started: float  # perf_counter, for the generation's time
    admitted: float  # monotonic, as the job's queued_at
    order: int  # admission order: the older job keeps its cells when the cache is full
    cached: int  # prompt tokens taken from the slot's cache
    pending: list[int]  # to evaluate next: the rest of the prompt, then the token just sampled
    generated: list[int] = field(default_factory=list)  # this choice's tokens (for a preempted re-read)
    index: int = 0  # the choice
    sampler: internals.LlamaSampler | None = None
    decoder: Any = None
    stops: StopMatcher | None = None
    produced: int = 0  # this choice
    total: int = 0  # every choice
    reasons: list[str] = field(default_factory=list)
    preempted: bool = False  # gave its cells back: waits to be the oldest running request


@dataclass(eq=False)
class _Slot:
    seq: int
    kv: list[int] = field(default_factory=list)  # the tokens at positions 0.. of this sequence's cache
    run: _Run | None = None
    used: float = 0.0  # when it last served: the least recently used idle cache goes first


class LocalModel:
    def __init__(self, model_id: str, path: Path, settings: EngineSettings) -> None:
        self.model_id = model_id
        self.path = path
        self.settings = settings
        self.max_context = settings.max_context
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._model: internals.LlamaModel | None = None
        self._ctx: internals.LlamaContext | None = None
        self._batch: internals.LlamaBatch | None = None
        self._memory: Any = None
        self.template: ChatTemplate | None = None
        self.n_ctx = 0  # per sequence: what one request may use
        self.max_token_bytes = 0
        self.kv_cells = 0
        self._n_vocab = 0
        self._eog: frozenset[int] = frozenset()
        self._slots: list[_Slot] = []
        self._waiting: deque[Job] = deque()
        self._admitted = 0
        self._step_started: float | None = None  # while a step runs: for the watchdog

    # ---- lifecycle -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Blocking: call from a thread at start-up."""
        s = self.settings
        params = internals.LlamaModel.default_params()  # type: ignore[no-untyped-call]
        model = internals.LlamaModel(path_model=str(self.path), params=params, verbose=False)
        trained = model.n_ctx_train()
        n_ctx = min(s.max_context, trained) if trained > 0 else s.max_context
        cells = max(s.kv_cells or 2 * n_ctx, n_ctx)
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = cells
        ctx_params.n_batch = min(s.n_batch, cells)
        ctx_params.n_ubatch = ctx_params.n_batch
        ctx_params.n_seq_max = s.parallel
        # One cache shared by every sequence: a long prompt may use most of it while others are idle.
        ctx_params.kv_unified = True
        threads = _cores()
        ctx_params.n_threads = s.n_threads or threads
        ctx_params.n_threads_batch = s.n_threads_batch or threads
        ctx_params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if s.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        ctx_params.no_perf = True
        ctx = internals.LlamaContext(model=model, params=ctx_params, verbose=False)
        metadata = model.metadata()
        template = metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{self.path.name} has no chat template in its GGUF metadata")
        bos, eos = model.token_bos(), model.token_eos()
        self.template = ChatTemplate(
            template,
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            eos_token=model.token_get_text(eos) if eos != -1 else "",
        )
        self._n_vocab = model.n_vocab()
        self._eog = frozenset(t for t in range(self._n_vocab) if llama_cpp.llama_token_is_eog(model.vocab, t))
        # The longest token's bytes: a text longer than the context times this cannot fit, whatever it
        # says, and is refused without tokenizing it (18 MB take the tokenizer 20 s).
        buffer = ctypes.create_string_buffer(1024)
        self.max_token_bytes = max(
            llama_cpp.llama_token_to_piece(model.vocab, t, buffer, len(buffer), 0, True)
            for t in range(self._n_vocab)
        )
        self._model, self._ctx = model, ctx
        self._memory = llama_cpp.llama_get_memory(ctx.ctx)
        self._batch = internals.LlamaBatch(n_tokens=ctx_params.n_batch, embd=0, n_seq_max=1, verbose=False)
        self._slots = [_Slot(seq) for seq in range(s.parallel)]
        self.n_ctx = n_ctx
        self.kv_cells = cells
        self._thread = threading.Thread(target=self._loop, name=f"engine-{self.model_id}", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch, name="engine-watchdog", daemon=True).start()

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        for resource in (self._batch, self._ctx, self._model):
            if resource is not None:
                resource.close()  # type: ignore[no-untyped-call]
        self._batch = self._ctx = self._model = None

    @property
    def ready(self) -> bool:
        return self._ctx is not None

    # ---- used from the engine process's main thread ---------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """The text's tokens; over the context (a text too long to fit, tokenized or not): 400."""
        # Reading the vocabulary is safe beside a running generation.
        assert self._model is not None
        size = len(text) if text.isascii() else len(text.encode())
        if size > self.n_ctx * self.max_token_bytes:
            raise context_length_exceeded(self.n_ctx, size // self.max_token_bytes, 0)
        tokens: list[int] = self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return tokens

    def vocab_size(self) -> int:
        return self._n_vocab

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    # ---- the worker thread: admit, step, repeat ------------------------------------------------------

    def _watch(self) -> None:
        """The net under the checks on requests: a step that runs far past any step's length (inside
        llama.cpp: a grammar the checks did not foresee, a kernel that never returns) cannot be interrupted
        in its thread. The process ends; the gateway answers the requests in flight as for any crash and
        starts a new engine for the next one."""
        limit = self.settings.step_timeout
        while self._thread is not None:
            time.sleep(1.0)
            started = self._step_started
            if started is not None and time.monotonic() - started > limit:
                log.error("a step of the model ran past %s s: the engine process ends", limit)
                logging.shutdown()
                os._exit(70)

    def _loop(self) -> None:
        try:
            while self._take_jobs():
                self._expire()
                self._admit()
                self._end_cancelled()
                if any(slot.run is not None for slot in self._slots):
                    self._step()
        except Exception:
            # A failure of the scheduler itself (not of one job): every job ends with an error, and the
            # process ends with them, so the gateway starts a new engine rather than queue behind a dead one.
            log.exception("the engine's scheduler failed")
            for job in [*(s.run.job for s in self._slots if s.run is not None), *self._waiting]:
                job.emit(JobFailed("local generation failed"))
            logging.shutdown()
            os._exit(70)

    def _take_jobs(self) -> bool:
        """Move submitted jobs to the waiting line; block only when there is nothing else to do.
        False once the model is closing."""
        busy = bool(self._waiting) or any(slot.run is not None for slot in self._slots)
        try:
            job = self._jobs.get_nowait() if busy else self._jobs.get()
            while True:
                if job is None:
                    return False
                self._waiting.append(job)
                job = self._jobs.get_nowait()
        except queue.Empty:
            return True

    def _expire(self) -> None:
        timeout = self.settings.queue_timeout
        now = time.monotonic()
        kept: deque[Job] = deque()
        for job in self._waiting:
            if job.cancelled.is_set():
                job.emit(JobDone(len(job.tokens), 0))  # cancelled while waiting: it still ends
            elif timeout is not None and now - job.queued_at > timeout:
                job.emit(Expired(f"not started within {timeout:g} s: the local model is busy"))
            else:
                kept.append(job)
        self._waiting = kept

    def _admit(self) -> None:
        """Give waiting jobs free slots, in arrival order: the slot whose cache shares the longest prefix
        with the prompt, else the least recently used one."""
        while self._waiting:
            free = [slot for slot in self._slots if slot.run is None]
            if not free:
                return
            job = self._waiting.popleft()
            slot = max(free, key=lambda s: (_common_prefix(s.kv, job.tokens), -s.used))
            # At least the prompt's last token is evaluated again: its logits give the first token.
            keep = min(_common_prefix(slot.kv, job.tokens), len(job.tokens) - 1)
            self._truncate(slot, keep)
            self._admitted += 1
            run = _Run(
                job=job,
                started=time.perf_counter(),
                admitted=time.monotonic(),
                order=self._admitted,
                cached=len(slot.kv),
                pending=job.tokens[len(slot.kv) :],
            )
            self._begin_choice(run)
            slot.run = run

    def _truncate(self, slot: _Slot, keep: int) -> None:
        if keep >= len(slot.kv):
            return
        if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, keep, -1):
            # This kind of cache cannot drop a sequence's tail (recurrent models): drop all of it.
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
            keep = 0
        del slot.kv[keep:]

    def _begin_choice(self, run: _Run) -> None:
        job, p = run.job, run.job.params
        seed = p.seed + run.index if p.seed is not None else random.getrandbits(31)
        run.sampler = self._sampler(job, seed)
        run.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        run.stops = StopMatcher(job.stop)
        run.produced = 0
        run.generated = []

    def _sampler(self, job: Job, seed: int) -> internals.LlamaSampler:
        """The chain llama-cpp-python's `Llama.sample` builds, with the request's settings."""
        p = job.params
        sampler = internals.LlamaSampler()  # type: ignore[no-untyped-call]
        bias = dict(job.logit_bias or {})
        if job.ignore_eos:
            bias.update(dict.fromkeys(self._eog, float("-inf")))
        if bias:
            sampler.add_logit_bias(self._n_vocab, bias)
        sampler.add_penalties(self._n_vocab, 64, p.repeat_penalty, p.frequency_penalty, p.presence_penalty)
        if job.grammar is not None:
            assert self._model is not None
            sampler.add_grammar(self._model, job.grammar)
        if p.temperature == 0.0:
            sampler.add_greedy()  # type: ignore[no-untyped-call]
        else:
            sampler.add_top_k(p.top_k)
            sampler.add_top_p(p.top_p, 1)
            sampler.add_min_p(p.min_p, 1)
            sampler.add_temp(p.temperature)
            sampler.add_dist(seed)
        return sampler

    def _end_cancelled(self) -> None:
        for slot in self._slots:
            run = slot.run
            if run is not None and run.job.cancelled.is_set():
                self._finish_choice(slot, run, "cancelled")
                self._end(slot, run)

    # ---- one step ------------------------------------------------------------------------------------

    def _step(self) -> None:
        self._step_started = time.monotonic()
        try:
            self._run_step()
        finally:
            self._step_started = None

    def _run_step(self) -> None:
        plan = self._plan()
        if not plan:
            return
        batch = self._batch
        assert batch is not None and self._ctx is not None
        b = batch.batch
        n = 0
        sample_at: list[tuple[_Slot, int]] = []
        for slot, tokens in plan:
            last = len(tokens) == len(slot.run.pending) if slot.run is not None else False
            pos = len(slot.kv)
            for k, token in enumerate(tokens):
                b.token[n] = token
                b.pos[n] = pos + k
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = slot.seq
                b.logits[n] = False
                n += 1
            if last:
                b.logits[n - 1] = True
                sample_at.append((slot, n - 1))
        b.n_tokens = n
        code = llama_cpp.llama_decode(self._ctx.ctx, b)
        if code == 1:
            # The cache found no room after all: make some (idle caches, else the youngest request's),
            # and plan again.
            if not self._free_idle(n):
                youngest = max((s for s in self._slots if s.run is not None and s.kv), key=_age, default=None)
                if youngest is not None:
                    self._preempt(youngest)
            return
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        for slot, tokens in plan:
            slot.kv.extend(tokens)
            run = slot.run
            assert run is not None
            del run.pending[: len(tokens)]
        for slot, index in sample_at:
            run = slot.run
            assert run is not None and run.sampler is not None
            token = llama_cpp.llama_sampler_sample(run.sampler.sampler, self._ctx.ctx, index)
            self._accept(slot, run, token)

    def _plan(self) -> list[tuple[_Slot, list[int]]]:
        """What this step evaluates: one token for every job that is generating, then prompt chunks,
        shortest prompt first, within the step's budget and the cache's free cells."""
        runs = sorted((s for s in self._slots if s.run is not None), key=lambda s: s.run.order)  # type: ignore[union-attr]
        n_batch = min(self.settings.n_batch, self.kv_cells)
        decoding = [s for s in runs if len(s.run.pending) == 1]  # type: ignore[union-attr]
        reading = [s for s in runs if len(s.run.pending) > 1]  # type: ignore[union-attr]
        plan: list[tuple[_Slot, list[int]]] = []
        for slot in decoding:
            if not self._room(1, protect=slot, planned=plan):
                break
            plan.append((slot, slot.run.pending[:1]))  # type: ignore[union-attr]
        budget = n_batch - len(plan)
        # Chunks of a fixed size, not timed: a request's prompt is then cut the same way each time it is
        # read alone, so greedy decoding gives the same answer run after run (chunk sizes change the
        # arithmetic's order, and timed chunks changed answers between runs).
        chunk = self.settings.prefill_chunk
        contended = len(runs) > 1 or bool(self._waiting) or not self._jobs.empty()
        budget = min(budget, chunk if contended else 2 * chunk)
        oldest = runs[0] if runs else None
        for slot in sorted(reading, key=lambda s: len(s.run.pending)):  # type: ignore[union-attr]
            if budget <= 0:
                break
            run = slot.run
            assert run is not None
            if run.preempted:
                if slot is not oldest:
                    continue  # read again once the older ones are done: else the two take turns evicting
                run.preempted = False
            take = min(budget, len(run.pending), self.n_ctx - len(slot.kv))
            if take <= 0 or not self._room(take, protect=slot, planned=plan):
                continue
            plan.append((slot, run.pending[:take]))
            budget -= take
        if not plan and runs:
            # Every running job waits for cells the others hold: the youngest holding some gives them back.
            holding = [s for s in runs[1:] if s.kv]
            if holding:
                self._preempt(holding[-1])
        return plan

    def _used(self) -> int:
        return sum(len(slot.kv) for slot in self._slots)

    def _room(self, needed: int, protect: _Slot, planned: list[tuple[_Slot, list[int]]]) -> bool:
        """Whether `needed` more cells fit beside what the cache holds and this step already claims,
        after freeing what may be freed for `protect`."""
        claimed = sum(len(tokens) for _, tokens in planned)
        if self.kv_cells - self._used() - claimed >= needed:
            return True
        self._free_cells(needed + claimed, protect, {id(slot) for slot, _ in planned})
        return self.kv_cells - self._used() - claimed >= needed

    def _free_cells(self, needed: int, protect: _Slot | None, planned: set[int] | None = None) -> None:
        """Idle slots' caches first (least recently used first), then running jobs younger than the one
        that needs the room and not already in this step's batch (`planned`, by id)."""
        if self._free_idle(needed) or protect is None or protect.run is None:
            return
        order = protect.run.order
        for slot in sorted(
            (
                s
                for s in self._slots
                if s.run is not None and s.kv and s.run.order > order and id(s) not in (planned or ())
            ),
            key=lambda s: -s.run.order,  # type: ignore[union-attr]
        ):
            if self.kv_cells - self._used() >= needed:
                return
            self._preempt(slot)

    def _free_idle(self, needed: int) -> bool:
        """Drop idle slots' caches, least recently used first, until `needed` cells are free."""
        for slot in sorted((s for s in self._slots if s.run is None and s.kv), key=lambda s: s.used):
            if self.kv_cells - self._used() >= needed:
                return True
            self._truncate(slot, 0)
        return self.kv_cells - self._used() >= needed

    def _preempt(self, slot: _Slot) -> None:
        run = slot.run
        assert run is not None
        # Its tokens so far (prompt, then this choice's output) are read again once there is room.
        run.pending = [*run.job.tokens, *run.generated][: len(slot.kv) + len(run.pending)]
        event("preempted", request_id=run.job.request_id, model=self.model_id, tokens=len(run.pending))
        run.preempted = True
        self._truncate(slot, 0)

    # ---- what a sampled token does -------------------------------------------------------------------

    def _accept(self, slot: _Slot, run: _Run, token: int) -> None:
        job = run.job
        if token in self._eog:
            self._finish_choice(slot, run, "stop")
            self._next_choice(slot, run)
            return
        run.produced += 1
        run.generated.append(token)
        run.pending = [token]
        assert self._model is not None and run.stops is not None
        text = run.decoder.decode(self._model.detokenize([token]))
        if text:
            text, stopped = run.stops.feed(text)
            if text:
                job.emit(Text(run.index, text))
            if stopped:
                self._finish_choice(slot, run, "stop", flush=False)
                self._next_choice(slot, run)
                return
        if run.produced >= job.max_tokens or len(slot.kv) + 1 >= self.n_ctx:
            self._finish_choice(slot, run, "length")
            self._next_choice(slot, run)

    def _finish_choice(self, slot: _Slot, run: _Run, reason: str, flush: bool = True) -> None:
        assert run.stops is not None
        if flush and reason != "cancelled":
            rest = run.stops.flush() + run.decoder.decode(b"", final=True)
            if rest:
                run.job.emit(Text(run.index, rest))
        run.job.emit(Finished(run.index, reason, run.produced, run.stops.matched))
        run.total += run.produced
        run.reasons.append(reason)

    def _next_choice(self, slot: _Slot, run: _Run) -> None:
        if run.index + 1 >= run.job.n or run.job.cancelled.is_set():
            self._end(slot, run)
            return
        run.index += 1
        # The next choice starts from the same prompt: its cache stays, the last token is read again.
        prompt = run.job.tokens
        self._truncate(slot, min(len(slot.kv), len(prompt) - 1))
        run.pending = prompt[len(slot.kv) :]
        self._begin_choice(run)

    def _end(self, slot: _Slot, run: _Run) -> None:
        job = run.job
        slot.run = None
        slot.used = time.monotonic()
        job.emit(JobDone(len(job.tokens), run.cached))
        event(
            "generation",
            request_id=job.request_id,
            model=self.model_id,
            prompt_tokens=len(job.tokens),
            cached_tokens=run.cached,
            completion_tokens=run.total,
            finish_reasons=run.reasons,
            ms=round((time.perf_counter() - run.started) * 1000, 2),
            queued_ms=round((run.admitted - job.queued_at) * 1000, 2),
        )


def _age(slot: _Slot) -> int:
    assert slot.run is not None
    return slot.run.order


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
