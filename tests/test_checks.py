from orders import checks


def test_a_sqlite_without_returning_is_refused_at_start_up(monkeypatch):
    monkeypatch.setattr(checks.sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(checks.sqlite3, "sqlite_version", "3.34.1")
    errors = checks.sqlite_has_returning(None)
    assert [error.id for error in errors] == ["orders.E001"]
    assert "3.34.1" in errors[0].msg


def test_the_sqlite_this_runs_on_has_returning():
    assert checks.sqlite_has_returning(None) == []
