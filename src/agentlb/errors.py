"""Specific exceptions; the API maps each to one HTTP status in one place (api/errors.py)."""

from __future__ import annotations

from collections.abc import Iterable


class AgentLBError(Exception):
    """Base of every error agentlb raises on purpose."""


class SettingsError(AgentLBError):
    """A configuration value is invalid; the message names the environment variable."""


class NoEligibleAgentError(AgentLBError):
    """No enabled agent has every required capability."""

    def __init__(self, missing_capabilities: Iterable[str], detail: str = "") -> None:
        self.missing_capabilities = sorted(missing_capabilities)
        message = detail or (
            "no enabled agent has the required capabilities: "
            + (", ".join(self.missing_capabilities) or "(no agents registered)")
        )
        super().__init__(message)


class AllAgentsEjectedError(AgentLBError):
    """Every capable agent is ejected and panic mode is off."""


class UnknownAgentError(AgentLBError):
    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        super().__init__(f"unknown agent: {agent_id!r}")


class UnknownTaskError(AgentLBError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"unknown task: {task_id!r} (never dispatched or expired)")


class TaskAlreadyCompletedError(AgentLBError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id!r} is already completed")


class DuplicateTaskError(AgentLBError):
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id!r} is already dispatched")


class ConflictingOutcomeError(AgentLBError):
    """A second outcome for a task differs from the one already recorded."""

    def __init__(self, task_id: str, fields: Iterable[str]) -> None:
        self.task_id = task_id
        self.fields = sorted(fields)
        super().__init__(
            f"task {task_id!r} already has a different outcome (differs in: {', '.join(self.fields)})"
        )


class ConflictingAgentError(AgentLBError):
    """The same agent id was defined twice with different definitions."""


class UnknownStrategyError(AgentLBError):
    def __init__(self, name: str, valid: Iterable[str]) -> None:
        self.name = name
        self.valid = sorted(valid)
        super().__init__(f"unknown strategy {name!r}; valid: {', '.join(self.valid)}")


class InvalidWeightsError(AgentLBError):
    pass


class StoreUnavailableError(AgentLBError):
    """The database cannot be written; selections go on from memory."""


class HistoryValidationError(AgentLBError):
    """A history file or frame breaks the history-file contract."""


class ModelLoadError(AgentLBError):
    """A model bundle or registry version cannot be loaded."""


class BenchmarkLimitError(AgentLBError):
    pass


class FleetFileError(AgentLBError):
    """A fleet file (YAML) breaks the fleet-file contract; the message names the agent and field."""


class SimulationError(AgentLBError):
    """A simulation cannot run as asked (unknown scenario, bad workload, missing dependency)."""


class AuthenticationError(AgentLBError):
    """A request lacks a valid API key (HTTP 401)."""


class PermissionDeniedError(AgentLBError):
    """A valid key without the admin right asked for an admin action (HTTP 403)."""


class TrainingInProgressError(AgentLBError):
    """Another training run holds the lock; a second one is refused, not interleaved."""


class TrainingFailedError(AgentLBError):
    """No servable candidate could be fitted (each failure is in its MLflow run)."""


class InvalidRecordError(AgentLBError, ValueError):
    """A value the database refuses to store (e.g. text PostgreSQL cannot hold); nothing was written."""


class InvalidOutcomeError(InvalidRecordError):
    """An outcome the store refuses: a duration that is not finite, negative, or zero for a success."""


class DispatchWriteSkippedError(StoreUnavailableError):
    """A dispatch record not attempted because a database write failed moments ago."""


class ReservationLostError(AgentLBError):
    """Every agent the selection tried had its `max_concurrency` slots taken at another
    replica first (shared live state): nothing was dispatched, the client may retry."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id}: its last slot was taken at another replica; retry")
        self.agent_id = agent_id


class ClusterError(AgentLBError):
    """A local cluster (`agentlb cluster`) cannot start or lost a process; the message says which
    part and why."""


class ExperimentError(AgentLBError):
    """An experiment definition or request that cannot run; `field` names what is wrong."""

    def __init__(self, field_name: str, reason: str) -> None:
        self.field = field_name
        self.reason = reason
        super().__init__(f"{field_name}: {reason}")


class UnknownExperimentError(AgentLBError):
    def __init__(self, experiment_id: str) -> None:
        self.experiment_id = experiment_id
        super().__init__(f"unknown experiment: {experiment_id!r}")


class DaskClusterError(AgentLBError):
    """The Dask cluster of `agentlb train --dask` (or AGENTLB_DASK_SCHEDULER) cannot be used or
    lost a worker during training; `source` names where its address came from."""

    def __init__(self, source: str, address: str, reason: str) -> None:
        self.source = source
        self.address = address
        self.reason = reason
        super().__init__(f"{source} {address!r}: {reason}")
