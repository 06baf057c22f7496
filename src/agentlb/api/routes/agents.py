"""The agent registry: store and tracker are changed together."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from agentlb.api.deps import AdminDep, ClientDep, ServiceDep
from agentlb.api.schemas import AgentCreate, AgentPublic, AgentUpdate, HeartbeatCreate, LoadMetricsPublic
from agentlb.errors import UnknownAgentError

router = APIRouter(prefix="/load-balancing/agents", tags=["agents"])

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid key"},
    403: {"description": "Needs the admin key"},
}


@router.post(
    "",
    response_model=AgentPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        **_AUTH,
        200: {"description": "An identical agent already exists"},
        409: {"description": "An agent with this id exists with a different definition"},
    },
)
def create_agent(body: AgentCreate, response: Response, service: ServiceDep, _: AdminDep) -> AgentPublic:
    """Register an agent; it is eligible for selection at once."""
    agent = body.to_domain()
    if not service.register_agent(agent):
        response.status_code = status.HTTP_200_OK
    row = service.store.get_agent(agent.id)
    return AgentPublic.of(row or agent)


@router.get("", response_model=list[AgentPublic], responses={401: _AUTH[401]})
def list_agents(service: ServiceDep, _: ClientDep) -> list[AgentPublic]:
    return [AgentPublic.of(r.agent, r.created_at, r.updated_at) for r in service.store.list_agents()]


@router.get(
    "/{agent_id}",
    response_model=AgentPublic,
    responses={401: _AUTH[401], 404: {"description": "Unknown agent"}},
)
def get_agent(agent_id: str, service: ServiceDep, _: ClientDep) -> AgentPublic:
    for row in service.store.list_agents():
        if row.agent.id == agent_id:
            return AgentPublic.of(row.agent, row.created_at, row.updated_at)
    raise UnknownAgentError(agent_id)


@router.patch(
    "/{agent_id}", response_model=AgentPublic, responses={**_AUTH, 404: {"description": "Unknown agent"}}
)
def update_agent(agent_id: str, body: AgentUpdate, service: ServiceDep, _: AdminDep) -> AgentPublic:
    """Change some fields of an agent; learned statistics and in-flight tasks are kept."""
    return AgentPublic.of(service.update_agent(agent_id, body.changes()))


@router.delete(
    "/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_AUTH, 404: {"description": "Unknown agent"}},
)
def delete_agent(agent_id: str, service: ServiceDep, _: AdminDep) -> Response:
    """Remove an agent; its in-flight tasks stop counting. Stored history is kept. To stop
    selecting an agent but keep it, PATCH `enabled: false` instead."""
    service.delete_agent(agent_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{agent_id}/heartbeat",
    response_model=LoadMetricsPublic,
    responses={401: _AUTH[401], 404: {"description": "Unknown agent"}},
)
def heartbeat(agent_id: str, body: HeartbeatCreate, service: ServiceDep, _: ClientDep) -> LoadMetricsPublic:
    """The agent's live CPU, memory and queue length, read by the resource-aware strategy."""
    return LoadMetricsPublic.of(
        service.heartbeat(agent_id, body.cpu_usage, body.memory_usage, body.queue_length)
    )
