"""The translations' compiled catalogs: Django reads .mo files, the project
keeps .po files (locale/<language>/LC_MESSAGES/), and `manage.py
compilemessages` (make run, make test) compiles one from the other in pure
Python, with Babel, so no GNU gettext is needed. The .mo files are build
output, not committed (docs/developers/translations.md)."""

from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po


def catalogs(locale_paths) -> list[Path]:
    """Every .po file under the LOCALE_PATHS."""
    return sorted(
        po for path in locale_paths for po in Path(path).glob("*/LC_MESSAGES/*.po")
    )


def compiled(po: Path) -> Path:
    return po.with_suffix(".mo")


def is_stale(po: Path) -> bool:
    """No .mo beside the .po, or one older than it."""
    mo = compiled(po)
    return not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime


def compile_catalog(po: Path) -> Path:
    """Write the .mo of `po`; fuzzy entries are left out, as msgfmt does."""
    with po.open("rb") as source:
        catalog = read_po(source, locale=po.parent.parent.name)
    mo = compiled(po)
    partial = mo.with_suffix(".mo.partial")
    with partial.open("wb") as target:
        write_mo(target, catalog, use_fuzzy=False)
    # Whole or not at all: a process starting meanwhile never reads half a file.
    partial.replace(mo)
    return mo
