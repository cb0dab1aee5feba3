"""The django-q2 internals in orders/workers/djangoq/ subclass and wrap
django-q2's own code of one version; any other version must be read against
them before it runs."""

from importlib.metadata import version

from orders.workers.djangoq import WRITTEN_FOR


def test_installed_django_q2_is_the_version_the_cluster_plumbing_was_written_for():
    installed = version("django-q2")
    assert installed == WRITTEN_FOR, (
        f"django-q2 {installed} is installed, but orders/workers/djangoq/ "
        f"(sentinel, queues, taken_along) and the qcluster command were written "
        f"against django-q2 {WRITTEN_FOR}: compare each piece with the code "
        f"named in orders/workers/djangoq/__init__.py in the new version, then "
        f"set WRITTEN_FOR there to {installed!r}"
    )
