from orders import checks


def test_a_sqlite_without_returning_is_refused_at_start_up(monkeypatch):
    monkeypatch.setattr(checks.sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(checks.sqlite3, "sqlite_version", "3.34.1")
    errors = checks.sqlite_has_returning(None)
    assert [error.id for error in errors] == ["orders.E001"]
    assert "3.34.1" in errors[0].msg


def test_the_sqlite_this_runs_on_has_returning():
    assert checks.sqlite_has_returning(None) == []


def test_a_proxy_in_front_without_the_scheme_header_is_warned_of(settings):
    settings.TRUSTED_PROXY_HOPS = 1
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = None

    warnings = checks.proxy_says_the_scheme(None)

    assert [warning.id for warning in warnings] == ["orders.W001"]
    assert "SECURE_PROXY_SSL_HEADER" in warnings[0].hint


def test_a_proxy_that_says_the_scheme_is_not_warned_of(settings):
    settings.TRUSTED_PROXY_HOPS = 1
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    assert checks.proxy_says_the_scheme(None) == []
