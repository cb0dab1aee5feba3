"""docs/deployers/configuration.md lists exactly the environment variables the
settings read: the settings record each name they read (orderproj/settings/
environment.py), so there is no second list to keep."""

import json
import re
import subprocess
import sys

from django.conf import settings

PAGE = settings.BASE_DIR / "docs" / "deployers" / "configuration.md"
# A table row whose first cell is one variable: | `NAME` | type | default | meaning |
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|(.*)\|$")
TYPES = {"boolean", "integer", "number", "string", "URL", "list", "path", "addresses"}


def variables_read_by_the_settings() -> list[str]:
    """Every name the settings read as they load, in a process of its own so that
    nothing a test read meanwhile counts."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, orderproj.settings\n"
            "from orderproj.settings.environment import env\n"
            "print(json.dumps(list(env.names)))",
        ],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def rows_of_the_page() -> dict[str, list[str]]:
    rows = {}
    for line in PAGE.read_text().splitlines():
        match = ROW.match(line)
        if match:
            name, rest = match.groups()
            assert name not in rows, f"{name} is listed twice"
            rows[name] = [cell.strip() for cell in rest.split(" | ")]
    return rows


def test_the_configuration_page_lists_every_variable_the_settings_read():
    read = set(variables_read_by_the_settings())
    listed = set(rows_of_the_page())

    assert sorted(read - listed) == [], "read by the settings, missing from the page"
    assert sorted(listed - read) == [], "on the page, read by no setting"


def test_each_variable_on_the_page_has_a_type_a_default_and_a_meaning():
    for name, cells in rows_of_the_page().items():
        assert len(cells) == 3, f"{name}: {cells}"
        kind, default, meaning = cells
        assert kind in TYPES, f"{name}: type {kind!r}"
        assert default and meaning, f"{name}: {cells}"
