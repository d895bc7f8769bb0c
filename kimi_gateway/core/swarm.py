"""Agent Swarm through the API: the requested model, given one more server-side tool (`create_agents`),
splits its task among sub-agents that the gateway runs in parallel, each its own tool loop.

A run is one request. The orchestrator is the request's tool loop (core/toolloop.py) with
`create_agents`; each sub-agent is a tool loop of its own over a fresh conversation (a system prompt and
its instructions) with the request's other server-side tools, never `create_agents` (one level deep).
Their final answers, each cut to a bound, are the tool's result; the orchestrator writes the answer.

Bounds ([agents] over the request's `agent` options): sub-agents in the run, sub-agents at once, each
one's model calls, the orchestrator's model calls, the size of each answer and instruction. Budget: one
credit hold for the run (core/credit.Spending) grown before every model call of every agent, never above
the run's `max_cost` or the balance; a sub-agent whose next call does not fit stops with what it wrote.
Each sub-agent's model call takes the account's rate limits (requests a minute, concurrency) like a
request of its own: a tier-0 account cannot fan out. A sub-agent that fails (every provider down, a rate
limit, its step bound) is reported to the orchestrator as a result, not raised. The client leaving
cancels the request's task, and with it every agent's call under way.

Every model call is a generation record of the request (ids `<response id>-2`, `-3`, ...), and the run's
tree (`AgentRun`: agents, tasks, status, steps, tool calls, tokens, cost, timings) is readable while it runs
and after (GET /api/v1/agents/runs/{id}; storage/agent_runs.py keeps finished runs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from kimi_gateway.accounts.billing import Accountant
from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.config import AgentsConfig
from kimi_gateway.core.credit import Spending
from kimi_gateway.core.generation import GenerationRun
from kimi_gateway.core.toolloop import PAUSED, ToolLoop, offer_server_tools
from kimi_gateway.errors import APIError
from kimi_gateway.ids import new_id
from kimi_gateway.media.workers import Budget
from kimi_gateway.outcome import GenerationOutcome, RequestOutcome
from kimi_gateway.providers.events import Finish, Usage
from kimi_gateway.routing import Router
from kimi_gateway.schema.chat import AgentOptions, ChatCompletionRequest
from kimi_gateway.schema.server_tools import AgentReport, AgentsOutput, ServerTool, ToolError, ToolOutput
from kimi_gateway.storage.agent_runs import AgentRunStore
from kimi_gateway.tools.runner import Tools

log = logging.getLogger(__name__)

CREATE_AGENTS = "create_agents"

SUB_AGENT_PROMPT = (
    "You are a sub-agent working on one part of a larger task. Do exactly what your instructions ask, "
    "using your tools where they help, then give your findings as your final answer: complete and "
    "self-contained (the agent that asked sees only that answer), with the sources you used."
)


@dataclass(slots=True)
class AgentNode:
    """One agent of a run, as the run's tree shows it."""

    name: str
    task: str
    role: str = "agent"  # "orchestrator" or "agent"
    parent: str | None = None  # the agent that created it (the orchestrator's name is "orchestrator")
    depth: int = 0  # the orchestrator's is 0, the agents it creates 1, theirs 2...
    status: str = "pending"  # pending, running, completed, failed, stopped
    generations: list[str] = field(default_factory=list)  # its model calls' record ids
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nano: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    answer: str | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "parent": self.parent,
            "depth": self.depth,
            "task": self.task,
            "status": self.status,
            "steps": len(self.generations),
            "generations": list(self.generations),
            "tool_calls": self.tool_calls,
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "cost": self.cost_nano / 1e9,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "answer": self.answer,
            "error": self.error,
        }


@dataclass(slots=True)
class AgentRun:
    """A swarm run: its orchestrator and sub-agents, and whether it is still going."""

    id: str
    account_id: str | None
    request_id: str  # the response's id (its first generation's)
    model: str
    orchestrator: AgentNode
    agents: list[AgentNode] = field(default_factory=list)
    status: str = "running"  # running, completed, stopped, failed
    stop_reason: str | None = None  # why a bound or the budget ended it early
    created_at: float = field(default_factory=time.time)
    changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _calls: asyncio.Semaphore | None = field(default=None, repr=False)

    def calls(self, bound: int) -> asyncio.Semaphore:
        """The run's bound on sub-agent model calls at once."""
        if self._calls is None:
            self._calls = asyncio.Semaphore(bound)
        return self._calls

    def touch(self) -> None:
        """Wake whoever watches the run (GET .../events): the tree changed."""
        self.changed.set()
        self.changed = asyncio.Event()

    def tree(self) -> dict[str, Any]:
        total = self.orchestrator.cost_nano + sum(a.cost_nano for a in self.agents)
        return {
            "id": self.id,
            "object": "agent.run",
            "request_id": self.request_id,
            "model": self.model,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "created_at": self.created_at,
            "orchestrator": self.orchestrator.view(),
            "agents": [agent.view() for agent in self.agents],
            "cost": total / 1e9,
        }


class AgentRuns:
    """The runs this process serves now, and the last finished ones (`keep`), for GET
    /api/v1/agents/runs/{id}; finished runs are also stored (storage/agent_runs.py) for every replica."""

    def __init__(self, keep: int, store: AgentRunStore | None) -> None:
        self._runs: OrderedDict[str, AgentRun] = OrderedDict()
        self._keep = keep
        self._store = store
        self._saving: set[asyncio.Task[None]] = set()

    def finish(self, run: AgentRun, status: str) -> None:
        """The run ended (settlement: synchronous): its status set, its tree stored in the background."""
        if run.status == "running":
            run.status = status
        run.touch()
        self._save_later(run)

    def _save_later(self, run: AgentRun) -> None:
        if self._store is None:
            return
        task = asyncio.get_running_loop().create_task(self._save(run))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _save(self, run: AgentRun) -> None:
        assert self._store is not None
        try:
            await self._store.save(run.account_id, run.tree())
        except Exception:
            log.exception("storing agent run %s failed; it stays readable on this replica", run.id)

    async def close(self) -> None:
        if self._saving:
            await asyncio.gather(*self._saving, return_exceptions=True)

    async def lookup(self, run_id: str, account_id: str | None) -> dict[str, Any] | None:
        """A run's tree: this process's (live, or kept), else the stored one; another account's is None."""
        run = self._runs.get(run_id)
        if run is not None:
            return run.tree() if run.account_id == account_id else None
        return await self._store.get(run_id, account_id) if self._store is not None else None

    def add(self, run: AgentRun) -> None:
        """A run starting: kept here while it runs, and stored at once (status running), so that another
        replica can say it exists; stored again when it ends."""
        self._runs[run.id] = run
        if len(self._runs) > self._keep:
            # The oldest finished run goes; running ones are bounded by the requests in flight.
            oldest = next((k for k, r in self._runs.items() if r.status != "running"), None)
            if oldest is not None:
                del self._runs[oldest]
        self._save_later(run)

    def get(self, run_id: str) -> AgentRun | None:
        return self._runs.get(run_id)


def swarm_options(body: ChatCompletionRequest, config: AgentsConfig) -> AgentOptions:
    """The request's options, each under the operator's bound."""
    asked = body.agent or AgentOptions()
    return AgentOptions(
        max_depth=min(asked.max_depth, config.max_depth),
        max_agents=min(asked.max_agents, config.max_agents),
        max_steps=min(asked.max_steps, config.max_steps),
        agent_max_steps=min(asked.agent_max_steps, config.agent_max_steps),
        max_cost=asked.max_cost,
    )


def offer_create_agents(body: ChatCompletionRequest, tools: Tools) -> None:
    """The orchestrator's extra tool, beside the request's other server-side tools; and web search and
    fetch for every agent where this gateway has them, so that a plain client's swarm can research."""
    kinds = {tool.kind for tool in body.server_tools}
    added = [ServerTool("agents", CREATE_AGENTS, citations=False)] if "agents" not in kinds else []
    for kind in ("web_search", "web_fetch"):
        if kind not in kinds and tools.unavailable(kind) is None:
            added.append(ServerTool(kind, kind))
    body.server_tools = [*body.server_tools, *added]


class Swarm:
    """The orchestrator's `create_agents` calls: each runs its sub-agents, in parallel, to their answers."""

    def __init__(
        self,
        run: AgentRun,
        options: AgentOptions,
        config: AgentsConfig,
        parent: ChatCompletionRequest,
        request: RequestOutcome,
        *,
        router: Router,
        tools: Tools,
        spending: Spending,
        accounts: Accountant,
        key: KeyRecord | None,
        budget: Budget,
        depth: int = 1,
        creator: str = "orchestrator",
    ) -> None:
        self.run_record, self.options, self.config = run, options, config
        self._parent, self._request = parent, request
        self._router, self._tools, self._spending, self._accounts = router, tools, spending, accounts
        self._key, self._budget = key, budget
        self.depth, self.creator = depth, creator  # the level of the agents it creates, and who asks
        self.usage = Usage()  # every sub-agent's calls (theirs included), summed: the response's usage
        self.cost_nano = 0

    async def run(self, arguments: str) -> ToolOutput:
        try:
            args = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            return ToolError("invalid_tool_input", "the arguments are not JSON")
        tasks = args.get("tasks") if isinstance(args, dict) else None
        if not isinstance(tasks, list) or not tasks:
            return ToolError("invalid_tool_input", "`tasks` must be a non-empty list of {name, instructions}")
        nodes: list[AgentNode] = []
        refused: list[AgentReport] = []
        for i, task in enumerate(tasks):
            created = len(self.run_record.agents)  # in the whole run, every level
            name = str(task.get("name") or f"agent-{created + 1}")[:64] if isinstance(task, dict) else ""
            instructions = task.get("instructions") if isinstance(task, dict) else None
            if not isinstance(instructions, str) or not instructions.strip():
                refused.append(
                    AgentReport(name or f"task {i + 1}", "failed", "", "no instructions were given")
                )
                continue
            if created >= self.options.max_agents:
                refused.append(
                    AgentReport(
                        name, "failed", "", f"not created: at most {self.options.max_agents} agents a run"
                    )
                )
                continue
            node = AgentNode(
                name, instructions[: self.config.max_task_chars], parent=self.creator, depth=self.depth
            )
            nodes.append(node)
            self.run_record.agents.append(node)
        self.run_record.touch()
        parallel = asyncio.Semaphore(self.config.max_parallel)
        reports = await asyncio.gather(*(self._agent(node, parallel) for node in nodes))
        self.run_record.touch()
        return AgentsOutput(self.run_record.id, (*reports, *refused))

    async def _agent(self, node: AgentNode, parallel: asyncio.Semaphore) -> AgentReport:
        async with parallel:
            node.status, node.started_at = "running", time.time()
            self.run_record.touch()
            try:
                return await self._work(node)
            except Exception as exc:
                # Whatever failed (a store unreachable, a bug), this agent fails alone: gather would
                # otherwise end the request while its siblings run on, unbilled.
                log.exception("sub-agent %s of run %s failed", node.name, self.run_record.id)
                return self._failed(node, f"the gateway failed running it ({type(exc).__name__})")
            finally:
                node.ended_at = time.time()
                if node.status == "running":  # cancelled: the client left, or the server stopped
                    node.status = "cancelled"
                self.run_record.touch()

    async def _work(self, node: AgentNode) -> AgentReport:
        body = self._body(node)
        try:
            routed = self._router.route(body, self._account)
        except APIError as exc:
            return self._failed(node, exc.message)
        first = self._request.generations[0]
        outcome = GenerationOutcome(f"{first.id}-0", first.created, body.model)  # numbered when it runs
        child = None
        if self.depth < self.options.max_depth:  # a depth limit that lets this agent create agents
            child = Swarm(
                self.run_record,
                self.options,
                self.config,
                body,
                self._request,
                router=self._router,
                tools=self._tools,
                spending=self._spending,
                accounts=self._accounts,
                key=self._key,
                budget=self._budget,
                depth=self.depth + 1,
                creator=node.name,
            )
        loop = ToolLoop(
            body,
            routed,
            outcome,
            self._request,
            router=self._router,
            tools=self._tools,
            spending=self._spending,
            account=self._account,
            budget=self._budget,
            max_steps=self.options.agent_max_steps,
            gate=self._gate,
            swarm=child,
        )
        if not await loop.reserve_first():
            node.status, node.error = "stopped", self.stopped_by()
            return AgentReport(node.name, "stopped", "", node.error)
        outcome.id = f"{first.id}-{len(self._request.generations) + 1}"
        self._request.generations.append(outcome)
        response = GenerationOutcome(new_id("agent_"), first.created, body.model)
        try:
            completion = await GenerationRun(loop, response, None).collect()
        except APIError as exc:
            self._count(node, loop)
            return self._failed(node, exc.message)
        self._count(node, loop)
        choice = completion["choices"][0] if completion["choices"] else None
        text = (choice["message"]["content"] or "") if choice is not None else ""
        answer = _cut(text, self.config.max_answer_bytes)
        node.answer = answer
        if choice is not None and choice.get("native_finish_reason") == PAUSED:
            node.status = "stopped"
            node.error = (
                self.stopped_by() or f"stopped at its bound of {self.options.agent_max_steps} model calls"
            )
            return AgentReport(
                node.name, "stopped", answer, node.error, len(node.generations), node.tool_calls
            )
        node.status = "completed"
        return AgentReport(node.name, "completed", answer, None, len(node.generations), node.tool_calls)

    def _count(self, node: AgentNode, loop: ToolLoop) -> None:
        """The agent's calls, from its own steps (whether it finished or failed), for its node; the
        response's totals get them and those of the agents it created."""
        own = _tally(node, loop)
        node.generations = [s.id for s in loop.steps if s.usage is not None or s.ttft_ms is not None]
        self.usage.add(own)
        self.cost_nano += node.cost_nano
        if loop.swarm is not None:
            self.usage.add(loop.swarm.usage)
            self.cost_nano += loop.swarm.cost_nano

    def _failed(self, node: AgentNode, why: str) -> AgentReport:
        node.status, node.error = "failed", why
        return AgentReport(node.name, "failed", "", why, len(node.generations), node.tool_calls)

    def orchestrator_ended(self, loop: ToolLoop, finish: Finish | None) -> None:
        """The orchestrator's loop ended (`finish`: its last turn's; None: it did not answer): its node
        and the run's status, set before the response's last event goes out, so that a client reading the
        run's tree once it has the answer finds it complete."""
        node, record = self.run_record.orchestrator, self.run_record
        _tally(node, loop)
        node.generations = [step.id for step in loop.steps]
        node.ended_at = time.time()
        if finish is None:
            return
        if finish.native_reason == PAUSED:
            record.status = node.status = "stopped"
            record.stop_reason = self.stopped_by() or (
                f"the orchestrator's bound of {self.options.max_steps} model calls"
            )
        else:
            record.status = node.status = "completed"
        record.touch()

    def stopped_by(self) -> str | None:
        """Why the budget refused a call of the run, if it did."""
        refused = self._spending.refused
        if refused == "max_cost":
            return f"the run's max_cost (${self.options.max_cost}) was reached"
        if refused == "credit":
            return "the account's credit ran out"
        return None

    @property
    def _account(self) -> str | None:
        return self._key.account_id if self._key is not None else None

    @asynccontextmanager
    async def _gate(self) -> AsyncIterator[None]:
        """Around each sub-agent model call: at most `max_parallel` at once in the whole run (every
        level: a parent waiting on its children holds no slot), and the account's rate limits, waited
        for a little (`rate_limit_wait_seconds`) before the call is refused."""
        async with self.run_record.calls(self.config.max_parallel), AsyncExitStack() as admitted:
            waited = 0.0
            while self._key is not None:
                try:
                    await admitted.enter_async_context(self._accounts.limited(self._key))
                    break
                except APIError as exc:
                    if exc.status != 429 or waited >= self.config.rate_limit_wait_seconds:
                        raise
                    pause = min(0.5, self.config.rate_limit_wait_seconds - waited)
                    await asyncio.sleep(pause)
                    waited += pause
            yield

    def _body(self, node: AgentNode) -> ChatCompletionRequest:
        """A sub-agent's request: the parent's model and settings, a conversation of its own, the parent's
        server-side tools but `create_agents`."""
        parent = self._parent
        body = ChatCompletionRequest.model_validate(
            {
                "model": parent.model,
                "messages": [
                    {"role": "system", "content": SUB_AGENT_PROMPT},
                    {"role": "user", "content": node.task},
                ],
                # Each call's bound, as the request set it for its own calls (its hold is sized by it).
                **({"max_tokens": parent.requested_max_tokens} if parent.requested_max_tokens else {}),
            }
        )
        body.provider, body.reasoning, body.thinking = parent.provider, parent.reasoning, parent.thinking
        # MCP servers stay servers: each sub-agent's loop lists their tools itself. `create_agents` stays
        # only where the depth limit lets this agent create agents of its own.
        deeper = self.depth < self.options.max_depth
        body.server_tools = [tool for tool in parent.server_tools if tool.kind != "agents" or deeper]
        offer_server_tools(body, self._tools)
        return body


def _tally(node: AgentNode, loop: ToolLoop) -> Usage:
    """An agent's node filled from its loop's own steps (not its sub-agents'): tool calls, tokens, cost;
    the tokens returned."""
    own = Usage()
    for step in loop.steps:
        if step.usage is not None:
            own.add(step.usage)
    node.tool_calls = sum(step.tool_calls for step in loop.steps)
    node.prompt_tokens, node.completion_tokens = own.prompt_tokens, own.completion_tokens
    node.cost_nano = loop.own_cost()
    return own


def _cut(text: str, max_bytes: int) -> str:
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", "ignore") + "\n[cut: the answer was longer]"


async def watch(run: AgentRun) -> AsyncIterator[dict[str, Any]]:
    """The run's tree each time it changes, until it ends (GET /api/v1/agents/runs/{id}/events)."""
    while True:
        changed = run.changed
        yield run.tree()
        if run.status != "running":
            return
        try:
            await asyncio.wait_for(changed.wait(), timeout=15)
        except TimeoutError:
            continue
