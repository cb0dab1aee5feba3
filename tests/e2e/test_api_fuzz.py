"""schemathesis over the published OpenAPI document against a real daphne, as
an integrator would run it (tests/fuzz.py): every check (a 5xx, a status,
content type, header or body the document does not describe, a schema-valid
request refused or a schema-violating one accepted, an undeclared method not
answered 405, authentication not enforced, an SSE event the document does not
describe, a resource gone that should be there, and ours: a refused request
that wrote rows) over every phase (examples, coverage, fuzzing, stateful),
anonymous and as staff.

A fixed seed and few examples keep it to about a minute; `make fuzz` runs the
same with a random seed and many more (docs/developers/testing.md says how to
replay a failure).
"""

import pytest

from tests import fuzz

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    with fuzz.fuzz_target(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@pytest.mark.parametrize("identity", fuzz.IDENTITIES)
def test_schemathesis_finds_nothing_with_every_check_and_phase(
    target, identity, tmp_path
):
    result = fuzz.run(
        target,
        identity,
        seed=fuzz.LANE_SEED,
        max_examples=fuzz.LANE_EXAMPLES,
        workdir=tmp_path,
    )
    assert result.returncode == 0, result.stdout
    report = fuzz.report(tmp_path, identity)
    assert (report["failures"], report["errors"]) == ([], []), result.stdout
    # Each operation of the document, none skipped or in error.
    operations = report["operations"]
    assert operations["tested"] == operations["total"] > 0, operations
    assert {phase["status"] for phase in report["phases"].values()} == {"success"}
    if identity == "staff":
        # Every staff operation got past its 401/403 at least once.
        assert report["warnings"]["missing_auth"] == [], result.stdout
