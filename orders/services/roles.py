"""The operator roles as Django groups: each group of orders/permissions.py's
ROLES set to exactly the permissions listed there, by `manage.py roles`
(docs/decisions/0010-operator-roles-by-a-command.md)."""

from dataclasses import dataclass

from django.apps import apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.db import transaction

from orders.permissions import ROLES


@dataclass(frozen=True)
class RoleChange:
    """What `roles_apply` did to one group; nothing when all three are empty."""

    group: str
    created: bool
    added: list[str]  # "orders.change_order", sorted
    removed: list[str]


def roles_apply() -> list[RoleChange]:
    """Create or correct each role's group. Permissions are made first, as
    `migrate` makes them (its post_migrate), so a model whose permissions it
    has not made yet cannot leave a role short. A permission added to one of
    these groups by hand is removed: a group of one's own is the place for it
    (docs/operators/roles.md)."""
    create_permissions(apps.get_app_config("orders"), verbosity=0)
    changes = []
    with transaction.atomic():
        for name, wanted in ROLES.items():
            group, created = Group.objects.get_or_create(name=name)
            held = {
                _name(permission)
                for permission in group.permissions.select_related("content_type")
            }
            added, removed = sorted(wanted - held), sorted(held - wanted)
            if added:
                group.permissions.add(*map(_permission, added))
            if removed:
                group.permissions.remove(*map(_permission, removed))
            changes.append(RoleChange(name, created, added, removed))
    return changes


def _name(permission: Permission) -> str:
    return f"{permission.content_type.app_label}.{permission.codename}"


def _permission(name: str) -> Permission:
    app_label, codename = name.split(".", 1)
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)
