"""The rooms of orders/ and the arrows allowed between them.

Entry points call services and selectors, which use the state machine and the
gateways, which sit on the models. An import the other way, a circle, or the
product reaching into the benchmark fails here with the chain that does it.
The graph counts every import, inside functions too (grimp reads the source).
See docs/developers/architecture.md.
"""

import functools

import grimp
import pytest

# From the top down: a module may import its own layer and the layers below.
LAYERS = [
    # Entry points: HTTP, pages, streams, the operators' console, the workers,
    # commands, and the wiring that names them.
    (
        "orderproj",
        "orders.urls",
        "orders.apps",
        "orders.management",
        "orders.tasks",
        "orders.api",
        "orders.pages",
        "orders.live",
        "orders.operations",
        "orders.workers",
        "orders.templatetags",
    ),
    # Writes and reads.
    ("orders.services", "orders.selectors"),
    # The one place that moves an order's status, the steps' gateways, the
    # webhooks' outbound HTTP and the customers' words for what happened.
    ("orders.state", "orders.gateways", "orders.outbound", "orders.customer_texts"),
    # The models, what everything may raise or mask, which permission each
    # operator action needs, the timeline's signals (what other code connects
    # to) and the translations' compiled catalogs.
    (
        "orders.models",
        "orders.exceptions",
        "orders.credentials",
        "orders.permissions",
        "orders.signals",
        "orders.catalogs",
    ),
]

# (importer, imported, why): arrows forbidden even inside the layers above.
FORBIDDEN = [
    # A stream records its own failure (services.failures) like any other
    # async work, and listens for the writers' notice (state.notify), but it
    # never moves an order.
    ("orders.live", "orders.services.orders", "the streams never write orders"),
    ("orders.live", "orders.services.attempts", "the streams never write orders"),
    ("orders.live", "orders.services.deliveries", "the streams never write orders"),
    ("orders.live", "orders.services.events", "the streams never write orders"),
    ("orders.live", "orders.state.transitions", "the streams never write orders"),
    ("orders.workers", "orders.live", "a worker never imports the web transport"),
    ("orders.gateways", "orders.models", "gateways take plain values, not rows"),
    ("orders.outbound", "orders.models", "outbound HTTP takes plain values, not rows"),
    (
        "orders.operations.metrics",
        "orders.services",
        "metrics observe and never write",
    ),
    ("orders.operations.metrics", "orders.workers", "metrics read, not run, work"),
]

# The benchmark is tooling: only its command and the tests may import it.
BENCH = "orders.bench"
MAY_IMPORT_BENCH = ("orders.bench", "orders.management.commands.bench")


@functools.cache
def import_graph() -> grimp.ImportGraph:
    return grimp.build_graph("orders", "orderproj", cache_dir=None)


def modules_of(graph: grimp.ImportGraph, package: str) -> set[str]:
    if package not in graph.modules:
        return set()
    return {package} | graph.find_descendants(package)


def describe(chain) -> str:
    return " -> ".join(chain)


def layer_of(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        for package in layer:
            if module == package or module.startswith(package + "."):
                return index
    return None


def test_every_layer_named_in_the_contract_exists():
    graph = import_graph()
    missing = [
        package
        for layer in LAYERS
        for package in layer
        if not modules_of(graph, package)
    ]
    assert not missing, f"the contract names rooms that are gone: {missing}"


def test_no_module_imports_a_layer_above_its_own():
    graph = import_graph()
    upward = []
    for importer in sorted(graph.modules):
        below = layer_of(importer)
        if below is None:
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            above = layer_of(imported)
            if above is not None and above < below:
                upward.append(f"{importer} -> {imported}")
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize(
    ("importer", "imported", "why"), FORBIDDEN, ids=[f[0] for f in FORBIDDEN]
)
def test_forbidden_arrow_is_absent(importer, imported, why):
    graph = import_graph()
    assert modules_of(graph, importer), f"{importer} is gone: update FORBIDDEN"
    chains = graph.find_shortest_chains(
        importer=importer, imported=imported, as_packages=True
    )
    assert not chains, f"{why}:\n" + "\n".join(describe(c) for c in sorted(chains))


def test_only_the_bench_command_imports_the_bench():
    graph = import_graph()
    offenders = sorted(
        importer
        for importer in graph.find_modules_that_directly_import(BENCH)
        | {
            m
            for module in modules_of(graph, BENCH)
            for m in graph.find_modules_that_directly_import(module)
        }
        if not importer.startswith(MAY_IMPORT_BENCH)
    )
    assert not offenders, f"the product imports the benchmark: {offenders}"


def test_no_import_circle():
    graph = import_graph()
    circles = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            chain = graph.find_shortest_chain(importer=imported, imported=importer)
            if chain:
                start = min(range(len(chain)), key=lambda i: chain[i])
                circles.add(tuple(chain[start:]) + tuple(chain[:start]))
    assert not circles, "import circles:\n" + "\n".join(
        describe(c) for c in sorted(circles)
    )
