"""Tutorial files (DESIGN §4, §6): `content_url` serves the Markdown to
the roadmap's owner (and staff) only, with a token or a session, and a roadmap's
files are deleted from storage once its deletion commits."""

import logging

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.test import Client

from roadmaps.models import Roadmap
from roadmaps.services import delete_roadmap
from tests.conftest import auth
from tests.support.events import assert_valid_event
from tests.support.retries import content_of, events_of, retry_url, settled, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def roadmap(alice, make_roadmap):
    return await sync_to_async(make_roadmap)(alice, concepts=2)


async def generate_tutorial(api, user, roadmap, concept_id: str = "c001") -> str:
    """Run one tutorial generation to completion; returns its task id."""
    before = (await content_of(roadmap, concept_id)).version
    started = await api.post(retry_url(roadmap, concept_id), headers=auth(user))
    assert started.status_code == 202, started.text

    async def landed():
        content = await settled(roadmap, concept_id)
        return content if content and content.version > before else None

    content = await wait_for(landed)
    assert content.status == "completed"
    return started.json()["data"]["task_id"]


def file_path(roadmap, concept_id: str, version: int) -> str:
    return f"/api/v1/roadmaps/{roadmap.pk}/concepts/{concept_id}/tutorial/v{version}.md"


@sync_to_async
def stored(name: str) -> bool:
    return default_storage.exists(name)


@sync_to_async
def stored_files_of(roadmap) -> list[str]:
    folder = settings.MEDIA_ROOT / "tutorials" / str(roadmap.pk)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


async def test_content_url_is_one_path_in_the_detail_the_tutorial_and_the_event(
    api, alice, roadmap
):
    task_id = await generate_tutorial(api, alice, roadmap)

    detail = (await api.get(f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(alice))).json()
    row = detail["framework"]["stages"][0]["modules"][0]["concepts"][0]
    tutorial = await api.get(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial", headers=auth(alice)
    )
    [complete] = [e for e in await events_of(task_id) if e["type"] == "concept_complete"]

    expected = file_path(roadmap, "c001", 1)
    assert row["content_ref"] == expected
    assert tutorial.json()["content_url"] == expected
    assert complete["data"]["content_url"] == expected
    assert_valid_event(complete)  # docs/event.schema.json states the path's shape
    # The concept without a completed version has no URL yet.
    assert detail["framework"]["stages"][0]["modules"][0]["concepts"][1]["content_ref"] is None


async def test_owner_reads_the_markdown_with_a_token(api, alice, roadmap):
    await generate_tutorial(api, alice, roadmap)
    markdown = (
        await api.get(f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial", headers=auth(alice))
    ).json()["markdown"]

    response = await api.get(
        file_path(roadmap, "c001", 1), headers={**auth(alice), "Accept": "text/markdown"}
    )

    assert response.status_code == 200
    assert response.text == markdown and markdown.startswith("# Concept 1")
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert int(response.headers["content-length"]) == len(markdown.encode())
    assert "private" in response.headers["cache-control"]


async def test_owner_reads_the_markdown_with_a_session(api, alice, roadmap):
    await generate_tutorial(api, alice, roadmap)
    client = Client()
    await sync_to_async(client.force_login)(alice)
    cookie = {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}

    response = await api.get(file_path(roadmap, "c001", 1), headers=cookie)

    assert response.status_code == 200
    assert response.text.startswith("# Concept 1")


async def test_another_users_file_answers_404_and_staff_may_read_it(
    api, alice, bob, make_user, roadmap
):
    """Staff read any roadmap through the API (roadmaps.selectors.visible_roadmaps),
    so they read its files too; anyone else gets the same 404 as an unknown file."""
    await generate_tutorial(api, alice, roadmap)
    staff = await sync_to_async(make_user)("operator", is_staff=True)

    foreign = await api.get(file_path(roadmap, "c001", 1), headers=auth(bob))
    unknown = await api.get(file_path(roadmap, "c999", 1), headers=auth(alice))
    by_staff = await api.get(file_path(roadmap, "c001", 1), headers=auth(staff))

    assert foreign.status_code == 404
    assert foreign.json() == unknown.json() == {"detail": "Not found."}
    assert unknown.status_code == 404
    assert by_staff.status_code == 200 and by_staff.text.startswith("# Concept 1")


async def test_anonymous_request_answers_401(api, alice, roadmap):
    await generate_tutorial(api, alice, roadmap)

    response = await api.get(file_path(roadmap, "c001", 1))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Token"
    assert "# Concept 1" not in response.text


async def test_media_path_no_longer_serves_tutorials(api, alice, roadmap):
    await generate_tutorial(api, alice, roadmap)
    content = await content_of(roadmap)
    assert await stored(content.content_ref)

    response = await api.get(f"{settings.MEDIA_URL}{content.content_ref}")

    assert response.status_code == 404
    assert "# Concept 1" not in response.text


async def test_only_the_current_version_is_served(api, alice, roadmap):
    """A response only ever names the current version; a superseded one answers
    404 rather than content the database no longer describes."""
    await generate_tutorial(api, alice, roadmap)
    await generate_tutorial(api, alice, roadmap)

    old = await api.get(file_path(roadmap, "c001", 1), headers=auth(alice))
    current = await api.get(file_path(roadmap, "c001", 2), headers=auth(alice))
    future = await api.get(file_path(roadmap, "c001", 3), headers=auth(alice))

    assert [old.status_code, current.status_code, future.status_code] == [404, 200, 404]


async def test_file_lost_by_storage_answers_404(api, alice, roadmap, caplog):
    await generate_tutorial(api, alice, roadmap)
    content = await content_of(roadmap)
    await sync_to_async(default_storage.delete)(content.content_ref)

    with caplog.at_level(logging.INFO):
        response = await api.get(file_path(roadmap, "c001", 1), headers=auth(alice))

    assert response.status_code == 404
    assert str(settings.MEDIA_ROOT) not in response.text
    assert f"Tutorial file {content.content_ref} is missing from storage" in caplog.messages


async def test_tutorial_whose_file_storage_lost_answers_404_and_warns(api, alice, roadmap, caplog):
    """The row says completed but the file is gone: storage loss, not a server
    bug. The client is told which status the content has (regenerate it), the
    operator where the file was."""
    await generate_tutorial(api, alice, roadmap)
    content = await content_of(roadmap)
    await sync_to_async(default_storage.delete)(content.content_ref)

    with caplog.at_level(logging.INFO):
        response = await api.get(
            f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial", headers=auth(alice)
        )

    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"detail", "status"} and body["status"] == "completed"
    assert "missing" in body["detail"]
    assert str(settings.MEDIA_ROOT) not in response.text
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.WARNING] == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(content.content_ref in message for message in warnings), warnings


# --- Deletion ---------------------------------------------------------------


async def test_deleting_the_roadmap_deletes_every_version_and_the_url_answers_404(
    api, alice, roadmap
):
    await generate_tutorial(api, alice, roadmap, "c001")
    await generate_tutorial(api, alice, roadmap, "c001")
    await generate_tutorial(api, alice, roadmap, "c002")
    assert await stored_files_of(roadmap) == [
        "c001", "c001/v1.md", "c001/v2.md", "c002", "c002/v1.md",
    ]  # fmt: skip

    deleted = await api.delete(f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(alice))

    assert deleted.status_code == 204
    assert await stored_files_of(roadmap) == []
    assert not (settings.MEDIA_ROOT / "tutorials" / str(roadmap.pk)).exists()
    response = await api.get(file_path(roadmap, "c001", 2), headers=auth(alice))
    assert response.status_code == 404


@pytest.mark.parametrize("how", ["queryset", "owner"])
async def test_every_way_of_deleting_a_roadmap_deletes_its_files(
    api, alice, bob, make_roadmap, roadmap, how
):
    """Not only the API: a queryset delete (shell, scripts) and the deletion of the
    owner (cascade) remove the files too; other roadmaps' files stay."""
    others = await sync_to_async(make_roadmap)(bob)
    await generate_tutorial(api, alice, roadmap)
    await generate_tutorial(api, bob, others)

    if how == "queryset":
        await Roadmap.objects.filter(owner=alice).adelete()
    else:
        await alice.adelete()

    assert await stored_files_of(roadmap) == []
    assert await stored_files_of(others) == ["c001", "c001/v1.md"]


async def test_files_are_deleted_only_once_the_deletion_commits(api, alice, roadmap):
    await generate_tutorial(api, alice, roadmap)
    name = (await content_of(roadmap)).content_ref

    @sync_to_async
    def delete_in_a_transaction() -> bool:
        with transaction.atomic():
            delete_roadmap(roadmap=roadmap)
            return default_storage.exists(name)

    assert await delete_in_a_transaction() is True  # still there before the commit
    assert not await stored(name)


async def test_a_rolled_back_deletion_keeps_the_files(api, alice, roadmap):
    await generate_tutorial(api, alice, roadmap)
    name = (await content_of(roadmap)).content_ref
    url = file_path(roadmap, "c001", 1)
    roadmap_id = roadmap.pk  # Model.delete() clears the instance's pk

    @sync_to_async
    def delete_then_roll_back() -> None:
        with pytest.raises(RuntimeError), transaction.atomic():
            delete_roadmap(roadmap=roadmap)
            raise RuntimeError("something later in the transaction failed")

    await delete_then_roll_back()

    assert await Roadmap.objects.filter(pk=roadmap_id).aexists()
    assert await stored(name)
    response = await api.get(url, headers=auth(alice))
    assert response.status_code == 200 and response.text.startswith("# Concept 1")
