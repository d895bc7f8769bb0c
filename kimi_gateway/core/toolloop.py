"""The tool loop: a request whose model may call server-side tools (web search, web fetch) that the
gateway runs itself. Each step is one model call, routed (with its own fallbacks) and recorded as its own
generation; when the model's turn calls only server-side tools, they run, their results join the
conversation and the model is called again, until it answers, calls a tool of the client's, or a bound
is reached.

To the response the loop is one generation: `events()` relays every step's text and reasoning as it
comes, adds a `ToolUse` and a `ToolResult` per call, and ends with one `Finish` and one `Done` whose usage
and cost are every step's together. The formats render that as their own server-tool shapes.

Bounds ([tools], stated in the README): model calls per request, tool calls per turn, each call's time
and result bytes, each tool's `max_uses`; the credit hold grows before each step (a 402 there ends the
loop with what was produced, as a paused turn); the client leaving closes `events()`, which stops the
step's generation or the tool call under way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, aclosing, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import TypeAdapter

from kimi_gateway.core.credit import Spending
from kimi_gateway.core.generation import GenerationRun, ResponseEvent
from kimi_gateway.errors import APIError, invalid_request
from kimi_gateway.ids import new_id
from kimi_gateway.media.workers import Budget
from kimi_gateway.outcome import GenerationOutcome, RequestOutcome
from kimi_gateway.providers.events import Delta, Done, Finish, ToolCallDelta, Usage
from kimi_gateway.routing import Router
from kimi_gateway.routing.attempts import Attempt, RoutedGeneration
from kimi_gateway.routing.plan import Candidate
from kimi_gateway.schema.chat import ChatCompletionRequest, Message, Tool, ToolMessage
from kimi_gateway.schema.server_tools import (
    ApprovalRequest,
    McpListing,
    ServerTool,
    ToolError,
    ToolOutput,
    ToolResult,
    ToolTally,
    ToolUse,
    mcp_function_name,
)
from kimi_gateway.tools.base import function_tool
from kimi_gateway.tools.mcp import McpFailed
from kimi_gateway.tools.runner import Tools, model_text

if TYPE_CHECKING:
    from kimi_gateway.core.swarm import Swarm

# Entered around a model call (a sub-agent's: the account's rate limits).
Gate = Callable[[], AbstractAsyncContextManager[None]]

# A turn that ends the loop early: the step bound, or credit for the next step ran out. Its finish is
# "length" (the answer is cut short) with this native reason, which Anthropic's format shows as its
# `pause_turn` (the client may send the turn back to go on).
PAUSED = "pause_turn"
# A turn that ends waiting for the client to approve an MCP call: a "stop" with this native reason.
APPROVAL = "mcp_approval_request"
# Context management: when the conversation nears the model's context (this share of it), the oldest tool
# results give way to this note, all but the latest KEPT_RESULTS, as Kimi K2.5's own evaluation managed
# long agent runs: the task and the latest steps stay whole.
NEAR_CONTEXT = 0.8
KEPT_RESULTS = 2
DROPPED = "[an earlier tool result, dropped to keep the conversation within the model's context]"


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class _Turn:
    """One step's assistant turn as it streams: what the conversation gets back if the loop goes on."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, _Call] = field(default_factory=dict)
    finish: Finish | None = None
    done: Done | None = None


class ToolLoop:
    """Presents the same face as a routed generation (`events`, `served`, `cancel`, `attempts`, ...) to
    the GenerationRun that renders the response."""

    def __init__(
        self,
        body: ChatCompletionRequest,
        first: RoutedGeneration,
        first_outcome: GenerationOutcome,
        request: RequestOutcome,
        *,
        router: Router,
        tools: Tools,
        spending: Spending,
        account: str | None,
        budget: Budget,
        max_steps: int | None = None,
        gate: Gate | None = None,
        swarm: Swarm | None = None,
        quiet_seconds: float = 10.0,
    ) -> None:
        self.body, self.request = body, request
        self._router, self._tools, self._spending = router, tools, spending
        self._spend_key = spending.key()
        self._account, self._budget = account, budget
        self._max_steps = max_steps or tools.config.max_steps
        # Around each model call: a sub-agent's calls count against the account's rate limits
        # (core/swarm.py); a request's own loop was admitted once, as one request (no gate).
        self._gate = gate
        self.swarm = swarm  # a swarm run's orchestrator: it runs `create_agents` calls
        self._quiet = quiet_seconds  # a keep-alive this often while a tool call runs
        self._routed = first
        self.steps: list[GenerationOutcome] = [first_outcome]
        self.tally = ToolTally()
        self.prompt_tokens = first.prompt_tokens
        self.candidates = first.candidates
        self._done_attempts: list[Attempt] = []
        self._upstream_done = 0.0
        self._server = {tool.name: tool for tool in body.server_tools if tool.kind != "mcp"}
        self._mcp_servers = [tool for tool in body.server_tools if tool.kind == "mcp"]
        self._uses: dict[str, int] = {}
        self._waiting = False  # an MCP call waits for the client's approval: the response ends
        self.dropped_results = 0  # tool results given way for the context (context management)

    # ---- the routed generation's face ----------------------------------------------------------------

    @property
    def served(self) -> Candidate | None:
        return self._routed.served

    @property
    def attempts(self) -> list[Attempt]:
        return [*self._done_attempts, *self._routed.attempts]

    @property
    def upstream_seconds(self) -> float:
        return self._upstream_done + self._routed.upstream_seconds

    def cancel(self) -> None:
        self._routed.cancel()

    # ---- the loop ------------------------------------------------------------------------------------

    async def events(self) -> AsyncGenerator[list[ResponseEvent], None]:
        try:
            max_steps = self._max_steps
            usage = Usage()
            cost = 0
            step = 0
            if self._mcp_servers:
                async for batch in self._list_mcp_tools():
                    yield batch
            if self.body.approved_calls:
                async for batch in self._run_approved(self.steps[0]):
                    yield batch
            if self._mcp_servers or self.body.approved_calls:
                # The conversation and the tools grew: routed again, held for again.
                self._routed = self._route()
                self.steps[0].prompt_estimate = self._routed.prompt_tokens
                if not await self._hold(self._routed, self.steps[0].tool_cost_nano):
                    yield [
                        Finish(0, "length", native_reason=PAUSED),
                        Done(cost_nano=self.steps[0].tool_cost_nano),
                    ]
                    return
            while True:
                outcome = self.steps[step]
                run = GenerationRun(self._routed, outcome, None)
                turn = _Turn()
                async for batch in self._step(run, turn):
                    yield batch
                if turn.done is not None:
                    usage.add(turn.done.usage)
                cost += (outcome.cost_nano or 0) + outcome.tool_cost_nano
                server_calls = [c for c in turn.calls.values() if c.name in self._server]
                client_calls = [c for c in turn.calls.values() if c.name not in self._server]
                finish = turn.finish or Finish(0, "stop")
                if server_calls and not client_calls:
                    # The calls run only if the hold covers their prices as well: a priced tool never runs
                    # on credit the account does not have.
                    if step + 1 < max_steps and await self._hold(
                        self._route(), cost + self._fees(server_calls)
                    ):
                        async for batch in self._run_calls(server_calls, outcome, turn):
                            yield batch
                        cost += outcome.tool_cost_nano
                        if self._waiting:
                            finish = Finish(0, "stop", native_reason=APPROVAL)
                        elif await self._next_step(cost):
                            step += 1
                            continue
                        else:
                            finish = Finish(0, "length", native_reason=PAUSED)
                    else:
                        finish = Finish(0, "length", native_reason=PAUSED)
                elif client_calls:
                    finish = Finish(0, "tool_calls", native_reason=finish.native_reason)
                done = turn.done or Done()
                if self.swarm is not None and self.swarm.depth == 1:  # a run's orchestrator answered
                    self.swarm.orchestrator_ended(self, finish)
                if self.swarm is not None:  # the sub-agents' calls are the run's too
                    usage.add(self.swarm.usage)
                    cost += self.swarm.cost_nano
                total = Done(usage=usage, provider=done.provider, model=done.model, cost_nano=cost)
                yield [finish, total]
                return
        finally:
            # However the loop ends (an answer, a failure, the client gone): what its calls cost
            # stays counted for the request, and nothing of it is under way any more.
            self._spending.settle(self._spend_key, self.own_cost())

    async def _step(self, run: GenerationRun, turn: _Turn) -> AsyncGenerator[list[ResponseEvent], None]:
        """One model call's events, relayed: its text and reasoning, and the client's own tool calls;
        the server tools' calls, its finish and its usage are held for the loop to decide."""
        outcome, server, started = run.outcome, self._server, run.outcome.started
        names: dict[int, str] = {}
        gate = self._gate() if self._gate is not None else nullcontext()
        async with gate, aclosing(run.routed.events()) as events:
            async for batch in events:
                out: list[ResponseEvent] = []
                for event in batch:
                    if type(event) is Delta:
                        if event.index != 0:
                            continue  # one answer per response when tools run (n is 1)
                        if outcome.ttft_ms is None:
                            outcome.ttft_ms = round((time.perf_counter() - started) * 1000, 2)
                        if event.content:
                            turn.content.append(event.content)
                        if event.reasoning:
                            turn.reasoning.append(event.reasoning)
                        relayed: list[ToolCallDelta] = []
                        for call in event.tool_calls or ():
                            slot = turn.calls.get(call.index) or turn.calls.setdefault(call.index, _Call())
                            if call.id:
                                slot.id = call.id
                            if call.name:
                                slot.name += call.name
                                names[call.index] = slot.name
                            slot.arguments += call.arguments
                            if names.get(call.index) not in server:
                                relayed.append(call)
                        if event.content or event.reasoning or relayed:
                            out.append(Delta(0, event.content, event.reasoning, relayed or None))
                    elif type(event) is Finish:
                        if event.index == 0:
                            turn.finish = event
                            outcome.finish_reason, outcome.stop_sequence = event.reason, event.stop_sequence
                    elif type(event) is Done:
                        turn.done = event
                        run.finished(event)
                if out:
                    yield out
        run.serve()

    async def _run_calls(
        self, calls: list[_Call], outcome: GenerationOutcome, turn: _Turn
    ) -> AsyncGenerator[list[ResponseEvent], None]:
        """The turn's server-side calls, one after the other (each bounded in time), and the conversation
        grown by the turn and their results."""
        config = self._tools.config
        assistant: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(turn.content) or None,
            "tool_calls": [],
        }
        if turn.reasoning:
            # Kimi refuses a thinking tool-call turn given back without its reasoning.
            assistant["reasoning_content"] = "".join(turn.reasoning)
        results: list[dict[str, Any]] = []
        for position, call in enumerate(calls):
            tool = self._server[call.name]
            call_id = call.id or new_id("call_")
            assistant["tool_calls"].append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
            )
            if tool.mcp is not None and tool.mcp_tool is not None and tool.mcp.needs_approval(tool.mcp_tool):
                # Not run: the response ends asking the client (`mcp_approval_request`); the client's
                # answer comes in the next request, which runs it (`_run_approved`).
                asked = ApprovalRequest(new_id("mcpr_"), tool, call.arguments)
                self.tally.activity.append(asked)
                self._waiting = True
                yield [asked]
                continue
            use = ToolUse(new_id("srvtoolu_"), tool, _input(call.arguments))
            self.tally.activity.append(use)
            yield [use]
            used = self._uses.get(tool.name, 0)
            if position >= config.max_calls_per_step:
                output: Any = ToolError(
                    "too_many_requests", f"at most {config.max_calls_per_step} calls a turn"
                )
                price = 0
            elif tool.max_uses is not None and used >= tool.max_uses:
                output, price = (
                    ToolError("max_uses_exceeded", f"{tool.name} may be used {tool.max_uses} times"),
                    0,
                )
            else:
                self._uses[tool.name] = used + 1
                if tool.kind == "agents":
                    running = self._create_agents(call.arguments)
                else:
                    running = self._tools.run(tool, call.arguments, self._account, self._budget)
                ran: list[ToolOutput] = []
                async for batch in _meanwhile(running, ran, self._quiet):
                    yield batch
                output = ran[0]
                # A call that failed is not charged (Anthropic's rule for errored searches).
                price = 0 if isinstance(output, ToolError) else self._tools.prices[tool.kind]
            result = ToolResult(use.id, tool, output, price)
            self.tally.count(result)
            self.tally.activity.append(result)
            outcome.tool_calls += 1
            outcome.tool_cost_nano += price
            yield [result]
            text = model_text(output, config.max_result_bytes)
            results.append({"role": "tool", "tool_call_id": call_id, "content": text})
        self.body.messages.extend(_messages([assistant, *results]))

    async def _list_mcp_tools(self) -> AsyncGenerator[list[ResponseEvent], None]:
        """Each MCP server's tools, offered to the model as functions named `<label>__<tool>`."""
        taken = {tool.function.name for tool in self.body.tools or ()}
        added: list[Tool] = []
        for ref in self._mcp_servers:
            server = ref.mcp
            if server is not None and server.url is None:
                server = self._tools.mcp.configured(server.label) or server
            listing: McpListing
            if server is None or server.url is None:
                listing = McpListing(ref.name, (), f"no MCP server named '{ref.name}' is configured")
            else:
                try:
                    listed = await self._tools.mcp.list_tools(server)
                except McpFailed as failed:
                    listing = McpListing(ref.name, (), str(failed))
                else:
                    shown = []
                    for found in listed:
                        name = mcp_function_name(ref.name, found.name)
                        if name in taken:
                            continue
                        taken.add(name)
                        self._server[name] = ServerTool("mcp", name, mcp=server, mcp_tool=found.name)
                        spec = {
                            "name": name,
                            "description": found.description,
                            "parameters": found.input_schema,
                        }
                        added.append(Tool.model_validate({"type": "function", "function": spec}))
                        shown.append(
                            {
                                "name": found.name,
                                "description": found.description,
                                "input_schema": found.input_schema,
                                "annotations": found.annotations,
                            }
                        )
                    listing = McpListing(ref.name, tuple(shown))
            self.tally.activity.append(listing)
            yield [listing]
        if added:
            self.body.tools = [*(self.body.tools or ()), *added]

    async def _run_approved(self, outcome: GenerationOutcome) -> AsyncGenerator[list[ResponseEvent], None]:
        """The calls the client answered: run if approved, refused to the model if not."""
        by_target = {(t.mcp.label, t.mcp_tool): t for t in self._server.values() if t.mcp is not None}
        assistant: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": []}
        results: list[dict[str, Any]] = []
        for approved in self.body.approved_calls:
            tool = by_target.get((approved.label, approved.tool))
            if tool is None:
                continue  # the server or the tool is gone from this request's tools
            assistant["tool_calls"].append(
                {
                    "id": approved.call_id,
                    "type": "function",
                    "function": {"name": tool.name, "arguments": approved.arguments},
                }
            )
            use = ToolUse(new_id("srvtoolu_"), tool, _input(approved.arguments))
            self.tally.activity.append(use)
            yield [use]
            if approved.approve:
                output: Any = await self._tools.run(tool, approved.arguments, self._account, self._budget)
            else:
                why = f": {approved.reason}" if approved.reason else ""
                output = ToolError("denied", f"The user did not approve this call{why}.")
            result = ToolResult(use.id, tool, output)
            outcome.tool_calls += 1
            self.tally.count(result)
            self.tally.activity.append(result)
            yield [result]
            text = model_text(output, self._tools.config.max_result_bytes)
            results.append({"role": "tool", "tool_call_id": approved.call_id, "content": text})
        if results:
            self.body.messages.extend(_messages([assistant, *results]))

    def _fees(self, calls: list[_Call]) -> int:
        """The most these calls can cost: each that may run, at its tool's price."""
        fees, uses = 0, dict(self._uses)
        for position, call in enumerate(calls):
            tool = self._server[call.name]
            used = uses.get(tool.name, 0)
            if position < self._tools.config.max_calls_per_step and (
                tool.max_uses is None or used < tool.max_uses
            ):
                uses[tool.name] = used + 1
                fees += self._tools.prices[tool.kind]
        return fees

    async def _hold(self, routed: RoutedGeneration, spent: int) -> bool:
        """Whether the hold can grow to `spent` and the worst case of `routed` (the balance, or a swarm
        run's max_cost, may say no), beside what other loops of the request hold."""
        return await self._spending.reserve(self._spend_key, self.body, routed, spent)

    def own_cost(self) -> int:
        """What this loop's model calls and tool calls cost so far (not its sub-agents')."""
        return sum((step.cost_nano or 0) + step.tool_cost_nano for step in self.steps)

    def _route(self) -> RoutedGeneration:
        """The conversation routed for its next model call. Near the model's context (or past it), the
        oldest tool results are dropped first and it is routed again."""
        try:
            routed = self._router.route(self.body, self._account)
        except APIError as exc:
            if exc.code != "context_length_exceeded" or not self._drop_old_results():
                raise
            return self._router.route(self.body, self._account)
        context = min((c.endpoint.context_length for c in routed.candidates), default=0)
        # The router's own measure of fitting: 3/4 of its estimate, and the answer's room.
        needed = routed.prompt_tokens * 3 // 4 + (self.body.requested_max_tokens or 0)
        if context and needed > context * NEAR_CONTEXT and self._drop_old_results():
            routed = self._router.route(self.body, self._account)
        return routed

    def _drop_old_results(self) -> bool:
        """The oldest tool results replaced by a note, all but the latest few: whether any was."""
        results = [m for m in self.body.messages if isinstance(m, ToolMessage) and m.content != DROPPED]
        old = results[:-KEPT_RESULTS]
        for message in old:
            message.content = DROPPED
        if old:
            self.dropped_results += len(old)
        return bool(old)

    async def reserve_first(self) -> bool:
        """A loop not admitted as a request (a sub-agent's): room for its first model call."""
        return await self._hold(self._routed, 0)

    async def _create_agents(self, arguments: str) -> ToolOutput:
        if self.swarm is None:  # an agent below the depth limit is not offered the tool, but may call it
            return ToolError("unavailable", "the run's depth limit does not let this agent create agents")
        return await self.swarm.run(arguments)

    async def _next_step(self, spent: int) -> bool:
        """The next model call routed (the conversation now holds the results), its hold grown: False
        when the credit does not cover it."""
        routed = self._route()
        if not await self._hold(routed, spent):
            return False
        self._done_attempts.extend(self._routed.attempts)
        self._upstream_done += self._routed.upstream_seconds
        self._routed = routed
        first = self.request.generations[0]
        # Every model call of the request is numbered in order, a swarm's sub-agents' included.
        outcome = GenerationOutcome(
            id=f"{first.id}-{len(self.request.generations) + 1}", created=first.created, model=self.body.model
        )
        outcome.prompt_estimate = routed.prompt_tokens
        self.steps.append(outcome)
        self.request.generations.append(outcome)
        return True


def offer_server_tools(body: ChatCompletionRequest, tools: Tools) -> None:
    """The request's server-side tools offered to its model as functions, beside the client's own;
    refused (400) where this gateway cannot run them or a name is taken."""
    if body.n != 1:
        raise invalid_request("server-side tools answer one choice: n must be 1", param="n")
    taken = {tool.function.name for tool in body.tools or ()}
    offered: dict[str, ServerTool] = {}
    servers: dict[str, ServerTool] = {}
    for tool in body.server_tools:
        if tool.kind == "mcp":  # a server: its tools are listed when the loop starts
            if tool.name in servers:
                raise invalid_request(f"two MCP servers are labelled '{tool.name}'", param="tools")
            servers[tool.name] = tool
            continue
        why = tools.unavailable(tool.kind)
        if why is not None:
            raise APIError(
                400, f"The {tool.kind} tool is not available: {why}.", param="tools", code="tool_unavailable"
            )
        if tool.name in taken:
            raise invalid_request(
                f"'{tool.name}' names both a server-side tool and one of your functions", param="tools"
            )
        offered.setdefault(tool.name, tool)
    if len(servers) > tools.config.mcp.max_servers:
        raise invalid_request(f"at most {tools.config.mcp.max_servers} MCP servers a request", param="tools")
    body.server_tools = [*offered.values(), *servers.values()]
    body.tools = [*(body.tools or ()), *(Tool.model_validate(function_tool(t)) for t in offered.values())]


async def _meanwhile(
    call: Coroutine[Any, Any, ToolOutput], result: list[ToolOutput], quiet: float
) -> AsyncGenerator[list[ResponseEvent], None]:
    """Runs `call` to its result (appended to `result`), yielding an empty batch every `quiet` seconds it
    takes (a swarm's agents may take minutes): a streamed response sends the format's keep-alive for it,
    so that proxies do not take the quiet for a dead stream. Closed early (the client left) or
    cancelled, it cancels the call and waits for it to end."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=quiet)
            if done:
                break
            yield []
        result.append(task.result())
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))


def _input(arguments: str) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])


def _messages(messages: list[dict[str, Any]]) -> list[Message]:
    """Chat messages as the request holds them (validated models)."""
    return _MESSAGES.validate_python(messages)
