"""Fuzzing a real ``tamrl serve`` with schemathesis: a stateless phase over every operation and a stateful phase
(``POST /upscale`` -> ``GET``/``DELETE /jobs/{id}`` through the OpenAPI links), with a job token set.

Starts the server over the demo cube and its drivers (run ``tamrl demo`` first), jobs in the service process and at
most 100 cells each (so the fuzzed jobs that pass submission finish in seconds). Every answer is checked by
schemathesis's default checks but ``positive_data_acceptance`` (a reversed period or a point on water is schema-valid
and rightly refused) and, in the stateful phase, ``use_after_free`` (a dismissed job stays readable by design).
Prints the cases per phase, the statuses and the failures. Pass: at least 1,000 cases, no 5xx, no failure.

    python bench/fuzz_service.py --demo tamrl_demo [--examples 150] [--sequences 60]
"""

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from load import start_server
from schemathesis.checks import positive_data_acceptance, use_after_free
from schemathesis.generation.meta import ParameterLocation

TOKEN = "fuzz-token"


def with_token(case) -> dict[str, str]:
    """The token, unless the case's headers are deliberately invalid (a missing token must stay missing)."""
    negative = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    return {} if negative else {"Authorization": f"Bearer {TOKEN}"}


def stateless(schema, examples: int, statuses: Counter, failures: list[str]) -> None:
    """``examples`` cases per operation."""
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers=with_token(case), timeout=60)
            statuses[response.status_code] += 1
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:  # a failure: recorded, and the other operations still run
            failures.append(f"{operation.label}: {str(exc)[:2000]}")


def stateful(schema, sequences: int, statuses: Counter, failures: list[str]) -> None:
    """``sequences`` sequences of up to 10 linked calls."""

    class Jobs(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": with_token(case), "timeout": 60}

        def after_call(self, response, case):
            super().after_call(response, case)
            statuses[response.status_code] += 1

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, additional_checks=additional_checks, transport_kwargs=kwargs or None,
                                   excluded_checks=[positive_data_acceptance, use_after_free],
                                   recorder=self.recorder)  # fmt: skip

    try:
        Jobs.run(settings=settings(max_examples=sequences, stateful_step_count=10, deadline=None, database=None,
                                   suppress_health_check=list(HealthCheck)))  # fmt: skip
    except Exception as exc:
        failures.append(f"stateful: {str(exc)[:2000]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("tamrl_demo"))
    parser.add_argument("--examples", type=int, default=150, help="cases per operation in the stateless phase")
    parser.add_argument("--sequences", type=int, default=60, help="sequences in the stateful phase")
    args = parser.parse_args()
    demo = args.demo.resolve()
    with tempfile.TemporaryDirectory(prefix="tamrl-fuzz-") as folder:
        (Path(folder) / "demo.zarr").symlink_to(demo / "demo.zarr")
        env = {"TAMRL_TOKEN": TOKEN, "TAMRL_MAX_JOB_PIXELS": "100"}
        server, port = start_server(["--cubes", folder, "--drivers", str(demo / "drivers.zarr"), "--workers", "0"],
                                    env)  # fmt: skip
        try:
            schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
            phases: dict[str, Counter] = {"stateless": Counter(), "stateful": Counter()}
            failures: list[str] = []
            stateless(schema, args.examples, phases["stateless"], failures)
            stateful(schema, args.sequences, phases["stateful"], failures)
        finally:
            server.terminate()
            server.wait(30)
    for phase, statuses in phases.items():
        print(f"{phase}: {sum(statuses.values()):,} cases; statuses {dict(sorted(statuses.items()))}")
    total = sum(sum(statuses.values()) for statuses in phases.values())
    errors = sum(n for statuses in phases.values() for status, n in statuses.items() if status >= 500)
    print(f"in all: {total:,} cases, {errors} 5xx, {len(failures)} failures")
    for failure in failures:
        print("FAILURE", failure)


if __name__ == "__main__":
    main()
