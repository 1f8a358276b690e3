"""The flush after each transactional test, without rebuilding what migrate made.

Django's flush empties every table and then sends post_migrate, whose receivers
(contenttypes', auth's) rebuild every content type and permission app by app: a
few dozen queries after every test, near a fifth of `make test-fast`. Here the
rows migrate made are read once and put back, the same rows with the same ids,
in two inserts. Registered as a plugin by tests/conftest.py."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def restore_content_types_after_flush(django_db_setup, django_db_blocker):
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.management import create_contenttypes
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection
    from django.db.models.signals import post_migrate

    if connection.settings_dict["NAME"] != connection.settings_dict["TEST"]["NAME"]:
        yield  # no test of this session uses the database: none was made
        return
    with django_db_blocker.unblock():
        content_types = list(ContentType.objects.all())
        permissions = list(Permission.objects.all())

    def restore(using: str, **kwargs) -> None:
        ContentType.objects.using(using).bulk_create(content_types)
        Permission.objects.using(using).bulk_create(permissions)

    # post_migrate is sent once per app: restore on one of them.
    contenttypes = apps.get_app_config("contenttypes")
    post_migrate.disconnect(create_contenttypes)
    post_migrate.disconnect(dispatch_uid="django.contrib.auth.management.create_permissions")
    post_migrate.connect(restore, sender=contenttypes, weak=False)
    yield
    post_migrate.disconnect(restore, sender=contenttypes)
    post_migrate.connect(create_contenttypes)
    post_migrate.connect(
        create_permissions, dispatch_uid="django.contrib.auth.management.create_permissions"
    )
