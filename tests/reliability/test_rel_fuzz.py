"""Schema fuzzing: schemathesis generates requests from the app's own OpenAPI schema for every
operation, valid (positive) and invalid (negative) data, sent with no key, the client key and
the admin key. Every response must be a non-5xx
whose status code, content type and body are the ones the schema documents."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from reliability_helpers import ADMIN_KEY, CLIENT_KEY, FLEET, make_settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from agentlb.api import create_app
from agentlb.api.schemas import AgentCreate
from agentlb.domain import TaskOutcome, TaskRequest
from agentlb.service import AgentLBService
from agentlb.training.bundle import export_bundle
from agentlb.training.quick import fit_predictor

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Per operation and key: bounded so the whole test stays near a minute on two cores.
EXAMPLES_DEEP = 100  # with the admin key: the request reaches the handler
EXAMPLES_SHALLOW = 15  # no key / client key: mostly refused by access control
# The benchmark runs the simulator; its own limits are tested elsewhere, so fewer examples here.
EXAMPLES_BENCHMARK = 4
KEYS: dict[str, dict[str, str]] = {
    "none": {},
    "client": {"Authorization": f"Bearer {CLIENT_KEY}"},
    "admin": {"Authorization": f"Bearer {ADMIN_KEY}"},
}


def _fuzz_operation(operation: Any, headers: dict[str, str], examples: int, mode: GenerationMode) -> int:
    ran = 0

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal ran
        ran += 1
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        # Negative data for an operation without parameters or body (health, metrics)
        # does not exist; every other combination must generate cases.
        assert mode is GenerationMode.NEGATIVE and ran == 0, operation.path
    return ran


def _train_champion(settings: Any) -> str:
    """History from 120 real selections and outcomes, a model fitted on it, exported as the
    champion bundle: the fuzzed service then serves a real model (and reload answers 200)."""
    rng = random.Random(5)
    service = AgentLBService.open(settings)
    try:
        for agent in FLEET:
            service.register_agent(AgentCreate(**agent).to_domain())
        for i in range(120):
            task = TaskRequest(
                task_type=("small", "large")[i % 2],
                required_capabilities=frozenset({"video_analysis"}),
                requirements={"size": 1 + i % 5, "priority": ("low", "high")[i % 2]},
            )
            result = service.select(task, "round_robin")
            speed = 1.0 if result.selected_agent.id == "video-1" else 3.0
            duration = (1 + i % 5) * speed * rng.uniform(0.9, 1.1)
            service.report_outcome(
                TaskOutcome(result.selected_agent.id, duration, True, task_id=result.task_id)
            )
        model = fit_predictor(service.store.history_frame(), seed=1)
        export_bundle(
            settings.models_dir, model.p50_booster, model.p90_booster, model.spec, model.version, {}
        )
        return str(model.version)
    finally:
        service.close()


@pytest.mark.slow
def test_fuzz_every_operation_with_and_without_keys(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_key=CLIENT_KEY, admin_key=ADMIN_KEY, max_ejection_percent=100.0)
    version = _train_champion(settings)
    service = AgentLBService.open(settings)
    try:
        assert service.predictor.current.version == version, service.predictor.fallback_reason
        app = create_app(service.settings, service=service)
        app.state.service = service  # schemathesis calls the ASGI app without its lifespan
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 15, [f"{op.method} {op.path}" for op in operations]
        started = time.monotonic()
        cases: dict[str, int] = {}
        for operation in operations:
            for key_name, headers in KEYS.items():
                examples = EXAMPLES_DEEP if key_name == "admin" else EXAMPLES_SHALLOW
                if operation.path.endswith("/benchmark"):
                    examples = EXAMPLES_BENCHMARK
                for mode in GenerationMode:
                    label = f"{operation.method.upper()} {operation.path} [{key_name}, {mode.value}]"
                    cases[label] = _fuzz_operation(operation, headers, examples, mode)
        total = sum(cases.values())
        elapsed = time.monotonic() - started
        print(
            f"\nschemathesis {schemathesis.__version__}: {total} cases over {len(operations)} operations "
            f"x {len(KEYS)} key levels x positive/negative data in {elapsed:.1f} s; "
            "0 server errors, 0 schema violations"
        )
        for label, count in sorted(cases.items()):
            print(f"  {count:4d}  {label}")
        assert total >= len(operations) * len(KEYS) * 2
    finally:
        service.close()
