"""One simulation run: a simulated fleet behind the REAL Balancer, tracker and strategies.

Each agent runs `max_concurrency` tasks at once and queues the rest FIFO. The balancer sees
only what production sees: outcomes it is told about (service time on the agent, success)
and heartbeats that arrive `heartbeat_delay_s` late. The hidden truth (sizes, speeds,
slow-downs, failure draws) stays here; only the `oracle` dispatcher reads it.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import AttributeValue, SelectionResult, TaskOutcome, TaskRequest
from agentlb.errors import AllAgentsEjectedError, NoEligibleAgentError, SimulationError
from agentlb.experiments.design import Experiment, ExperimentDesign
from agentlb.experiments.routing import ExperimentRouter
from agentlb.predictor.base import PredictorRef
from agentlb.sim.engine import Engine
from agentlb.sim.fleet import SimAgentSpec
from agentlb.sim.workload import SimTask
from agentlb.strategies import STRATEGY_NAMES
from agentlb.tracker import AgentLoadTracker

ORACLE = "oracle"
SIM_STRATEGIES: tuple[str, ...] = (*STRATEGY_NAMES, ORACLE)
SIM_EPOCH_S = 1_700_000_000.0  # history timestamps: simulated time 0 is 2023-11-14 22:13:20 UTC

log = logging.getLogger("agentlb.sim")


@dataclass(frozen=True)
class RunConfig:
    """How to drive one run. `warmup_share` of the tasks (by arrival) is excluded from metrics."""

    strategy: str
    seed: int = 0
    warmup_share: float = 0.1
    heartbeat_interval_s: float = 5.0
    heartbeat_delay_s: float = 2.0
    record_events: bool = False
    collect_history: bool = False
    balancer_config: BalancerConfig = field(default_factory=BalancerConfig)
    # An online experiment: its arms select the tasks in its scope (through the service's own
    # router), `strategy` the others; RunResult.arms says which arm took each task.
    experiment: ExperimentDesign | None = None


@dataclass
class _AgentSim:
    spec: SimAgentSpec
    slots: int
    present: bool = False
    accepting: bool = False
    running: dict[str, float] = field(default_factory=dict)  # task id -> true finish time
    queue: deque[SimTask] = field(default_factory=deque)
    last_t: float = 0.0
    busy_slot_s: float = 0.0
    over_s: float = 0.0
    present_s: float = 0.0
    completed: int = 0


@dataclass
class RunResult:
    """Per-task records (in arrival order) and per-agent integrals over the measured window."""

    strategy: str
    seed: int
    task_types: list[str]
    arrival_s: list[float]
    start_s: list[float]
    finish_s: list[float]
    service_s: list[float]
    success: list[bool]
    agent_ids: list[str]
    deadline_s: list[float | None]
    fallback: list[bool]
    measured_from: int
    window_s: tuple[float, float]
    utilisation_by_agent: dict[str, float]
    over_utilised_share: float
    tasks_by_agent: dict[str, int]
    ejections: int
    panics: int
    events: list[tuple[float, str, str, str]]
    history: list[dict[str, AttributeValue]]
    events_processed: int
    wall_s: float
    balancer_s: float
    model_version: str | None
    arms: list[str] = field(default_factory=list)


def _overlap(a: float, b: float, lo: float, hi: float) -> float:
    return max(0.0, min(b, hi) - max(a, lo))


class Simulation:
    """Build once per (run, strategy, seed) and call `run()`."""

    def __init__(
        self,
        fleet: Sequence[SimAgentSpec],
        tasks: Sequence[SimTask],
        config: RunConfig,
        predictor: PredictorRef | None = None,
    ) -> None:
        if config.strategy not in SIM_STRATEGIES:
            raise SimulationError(f"unknown strategy {config.strategy!r}; valid: {', '.join(SIM_STRATEGIES)}")
        if not tasks:
            raise SimulationError("no tasks to simulate")
        if not 0.0 <= config.warmup_share < 1.0:
            raise SimulationError("warmup_share must be in [0, 1)")
        self.config = config
        self.tasks = list(tasks)
        self.engine = Engine()
        self.tracker = AgentLoadTracker(clock=self.engine.clock)
        self.balancer = Balancer(self.tracker, predictor, config.balancer_config, seed=config.seed)
        self.agents = {spec.id: _AgentSim(spec, spec.agent.max_concurrency) for spec in fleet}
        capabilities: set[str] = set()
        for spec in fleet:
            capabilities |= spec.agent.capabilities
        self._capabilities = capabilities
        self._rng = random.Random(config.seed * 104729 + 17)
        n = len(self.tasks)
        self._n = n
        self.measured_from = min(int(n * config.warmup_share), n - 1)
        self._window = (self.tasks[self.measured_from].arrival_s, self.tasks[-1].arrival_s)
        self._start = [math.nan] * n
        self._finish = [math.nan] * n
        self._service = [math.nan] * n
        self._success = [False] * n
        self._agent = [""] * n
        self._fallback = [False] * n
        self._dispatch: dict[int, SelectionResult] = {}
        self._history: list[dict[str, AttributeValue]] = []
        self._events: list[tuple[float, str, str, str]] = []
        self._finished = 0
        self._model_version: str | None = None
        self._balancer_s = 0.0
        self._arm = [""] * n
        self._router: ExperimentRouter | None = None
        if config.experiment is not None:
            if config.strategy == ORACLE:
                raise SimulationError("an experiment cannot run beside the oracle")
            self._router = ExperimentRouter(self.balancer, self.engine.clock)
            self._router.set_running([Experiment(f"sim{config.seed}", config.experiment, "running", 0.0)])

    # --- hidden truth ----------------------------------------------------------------
    @staticmethod
    def service_time(task: SimTask, spec: SimAgentSpec, start_s: float) -> float:
        """size / speed(agent, type) x noise x slow-down factor at the start."""
        return task.size_s * task.noise / spec.speed_for(task.task_type) * spec.slowdown_at(start_s)

    # --- event handlers --------------------------------------------------------------
    def _log(self, now: float, kind: str, task_id: str, agent_id: str) -> None:
        if self.config.record_events:
            self._events.append((round(now, 9), kind, task_id, agent_id))

    def _account(self, agent: _AgentSim, now: float) -> None:
        """Integrate busy slots, queueing and presence up to `now` within the measured window."""
        lo, hi = self._window
        span = _overlap(agent.last_t, now, lo, hi)
        if span > 0 and agent.present:
            agent.busy_slot_s += len(agent.running) * span
            agent.present_s += span
            if agent.queue:
                agent.over_s += span
        agent.last_t = now

    def _join(self, now: float, agent: _AgentSim) -> None:
        self._account(agent, now)
        agent.present = agent.accepting = True
        # agents present at the start are not new: no slow-start ramp for them
        registered = now - self.config.balancer_config.slow_start_window_s if now == 0.0 else now
        self.tracker.register(agent.spec.agent, registered_at=registered)
        self._log(now, "join", "", agent.spec.id)

    def _leave(self, now: float, agent: _AgentSim) -> None:
        """A leaving agent drains: it takes no new work and finishes what it holds."""
        from dataclasses import replace

        agent.accepting = False
        self.tracker.register(replace(agent.spec.agent, enabled=False))
        self._log(now, "leave", "", agent.spec.id)

    def _arrive(self, now: float, task: SimTask) -> None:
        self._log(now, "arrive", task.task_id, "")
        if self.config.strategy == ORACLE:
            agent_id = self._oracle(task, now)
            if agent_id is None:
                self._reject(now, task)
                return
        else:
            request = TaskRequest(
                task_type=task.task_type,
                required_capabilities=(
                    frozenset((task.task_type,)) if task.task_type in self._capabilities else frozenset()
                ),
                requirements=task.attributes,
                task_id=task.task_id,
                deadline_s=task.deadline_s,
            )
            tick = time.perf_counter()
            strategy = self.config.strategy
            if self._router is not None:
                routed, arm = self._router.route(request, None)
                if arm is not None:
                    strategy = routed or strategy
                    self._arm[task.index] = arm.arm
            try:
                result = self.balancer.select(request, strategy)
            except (NoEligibleAgentError, AllAgentsEjectedError) as exc:
                log.debug("task %s rejected: %s", task.task_id, exc)
                self._reject(now, task)
                return
            finally:
                self._balancer_s += time.perf_counter() - tick
            agent_id = result.selected_agent.id
            self._fallback[task.index] = result.fallback_used
            if result.model_version is not None:
                self._model_version = result.model_version
            if self.config.collect_history:
                self._dispatch[task.index] = result
        agent = self.agents[agent_id]
        self._agent[task.index] = agent_id
        self._log(now, "dispatch", task.task_id, agent_id)
        self._account(agent, now)
        if len(agent.running) < agent.slots:
            self._begin(now, agent, task)
        else:
            agent.queue.append(task)

    def _reject(self, now: float, task: SimTask) -> None:
        self._log(now, "reject", task.task_id, "")
        self._finish[task.index] = now
        self._finished += 1

    def _begin(self, now: float, agent: _AgentSim, task: SimTask) -> None:
        service = self.service_time(task, agent.spec, now)
        finish = now + service
        agent.running[task.task_id] = finish
        self._start[task.index] = now
        self._service[task.index] = service
        self._log(now, "start", task.task_id, agent.spec.id)
        self.engine.at(finish, self._end, (agent, task))

    def _end(self, now: float, payload: tuple[_AgentSim, SimTask]) -> None:
        agent, task = payload
        self._account(agent, now)
        del agent.running[task.task_id]
        success = task.failure_draw >= agent.spec.failure_rate
        i = task.index
        self._finish[i] = now
        self._success[i] = success
        self._finished += 1
        agent.completed += 1
        self._log(now, "finish" if success else "fail", task.task_id, agent.spec.id)
        if self._router is not None:
            self._router.observe_outcome(task.task_id, now)
        if self.config.strategy != ORACLE:
            tick = time.perf_counter()
            self.balancer.report(
                TaskOutcome(agent.spec.id, self._service[i], success, task.task_id, task.task_type),
                finished_at=now,
            )
            self._balancer_s += time.perf_counter() - tick
        if self.config.collect_history:
            self._history.append(self._history_row(task, agent.spec.id, now))
        if agent.queue:
            self._begin(now, agent, agent.queue.popleft())

    def _heartbeat_tick(self, now: float, _: Any) -> None:
        """Sample every agent's resource use now; the tracker hears of it `delay` later."""
        readings = []
        for agent in self.agents.values():
            if not agent.present:
                continue
            load = len(agent.running) / agent.slots
            backlog = (len(agent.running) + len(agent.queue)) / (2.0 * agent.slots)
            cpu = min(100.0, max(0.0, 5.0 + 90.0 * load + self._rng.gauss(0.0, 3.0)))
            memory = min(100.0, max(0.0, 20.0 + 60.0 * min(backlog, 1.0) + self._rng.gauss(0.0, 2.0)))
            readings.append((agent.spec.id, cpu, memory, len(agent.queue)))
        self.engine.at(now + self.config.heartbeat_delay_s, self._deliver, readings)
        if self._finished < self._n:
            self.engine.at(now + self.config.heartbeat_interval_s, self._heartbeat_tick)

    def _deliver(self, now: float, readings: list[tuple[str, float, float, int]]) -> None:
        for agent_id, cpu, memory, queued in readings:
            if self.tracker.has_agent(agent_id):
                self.tracker.heartbeat(agent_id, cpu, memory, queued)

    # --- the clairvoyant baseline ----------------------------------------------------
    def _oracle(self, task: SimTask, now: float) -> str | None:
        """Earliest true completion: replays each agent's real queue with true service times."""
        best_id: str | None = None
        best = math.inf
        need = task.task_type in self._capabilities
        for agent in self.agents.values():
            spec = agent.spec
            if not agent.accepting or (need and task.task_type not in spec.agent.capabilities):
                continue
            if not spec.agent.enabled:
                continue
            free = sorted(agent.running.values())
            free[:0] = [now] * (agent.slots - len(free))
            heapq.heapify(free)
            for queued in agent.queue:
                start = heapq.heappop(free)
                heapq.heappush(free, start + self.service_time(queued, spec, start))
            start = heapq.heappop(free)
            completion = start + self.service_time(task, spec, start)
            if completion < best:
                best, best_id = completion, spec.id
        return best_id

    # --- history ------------------------------------------------------------------------
    def _history_row(self, task: SimTask, agent_id: str, now: float) -> dict[str, AttributeValue]:
        i = task.index
        result = self._dispatch.pop(i, None)
        row: dict[str, AttributeValue] = {"task_type": task.task_type, **task.attributes}
        if result is not None:
            row.update(result.dispatch_features)
        prediction = result.predicted_completion if result is not None else None
        row.update(
            {
                "task_id": task.task_id,
                "arrival_time": SIM_EPOCH_S + task.arrival_s,
                "finished_at": SIM_EPOCH_S + now,
                "agent_id": agent_id,
                "success": self._success[i],
                "duration_s": self._service[i],
                "predicted_p50_s": prediction.service_p50_s if prediction else None,
                "predicted_p90_s": prediction.service_p90_s if prediction else None,
                "model_version": result.model_version if result is not None else None,
                "strategy": self.config.strategy,
            }
        )
        return row

    # --- run ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        started = time.perf_counter()
        engine = self.engine
        for agent in self.agents.values():
            spec = agent.spec
            engine.at(spec.join_at_s, lambda now, a: self._join(now, a), agent)
            if spec.leave_at_s is not None:
                engine.at(spec.leave_at_s, lambda now, a: self._leave(now, a), agent)
        for task in self.tasks:
            engine.at(task.arrival_s, self._arrive, task)
        if self.config.heartbeat_interval_s > 0:
            engine.at(0.0, self._heartbeat_tick)
        engine.run()
        end = engine.now
        for agent in self.agents.values():
            self._account(agent, max(end, self._window[1]))
        stats = self.balancer.stats
        utilisation = {
            agent_id: (a.busy_slot_s / (a.slots * a.present_s) if a.present_s > 0 else 0.0)
            for agent_id, a in self.agents.items()
        }
        present = sum(a.present_s for a in self.agents.values())
        over = sum(a.over_s for a in self.agents.values())
        tasks_by_agent: dict[str, int] = {agent_id: 0 for agent_id in self.agents}
        for agent_id in self._agent[self.measured_from :]:
            if agent_id:
                tasks_by_agent[agent_id] += 1
        return RunResult(
            strategy=self.config.strategy,
            seed=self.config.seed,
            task_types=[t.task_type for t in self.tasks],
            arrival_s=[t.arrival_s for t in self.tasks],
            start_s=self._start,
            finish_s=self._finish,
            service_s=self._service,
            success=self._success,
            agent_ids=self._agent,
            deadline_s=[t.deadline_s for t in self.tasks],
            fallback=self._fallback,
            measured_from=self.measured_from,
            window_s=self._window,
            utilisation_by_agent=utilisation,
            over_utilised_share=over / present if present > 0 else 0.0,
            tasks_by_agent=tasks_by_agent,
            ejections=stats.ejections,
            panics=stats.panics,
            events=self._events,
            history=self._history,
            events_processed=engine.events_processed,
            wall_s=time.perf_counter() - started,
            balancer_s=self._balancer_s,
            model_version=self._model_version,
            arms=self._arm if self._router is not None else [],
        )


def simulate(
    fleet: Sequence[SimAgentSpec],
    tasks: Sequence[SimTask],
    config: RunConfig,
    predictor: PredictorRef | None = None,
) -> RunResult:
    """Run one simulation; a pure function of its arguments (same inputs, same event log)."""
    return Simulation(fleet, tasks, config, predictor).run()


def history_frame(rows: Sequence[Mapping[str, AttributeValue]]) -> Any:
    """The collected history rows as a pandas frame in the history-file contract."""
    import pandas as pd

    from agentlb.features import AGENT_STATE_FEATURES

    frame = pd.DataFrame(list(rows))
    for column in AGENT_STATE_FEATURES:
        if column not in frame.columns:
            frame[column] = math.nan
        else:
            frame[column] = frame[column].astype("float64")
    if "arrival_time" in frame.columns:
        frame = frame.sort_values("arrival_time", kind="stable").reset_index(drop=True)
    return frame
