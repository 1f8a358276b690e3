"""The HTTP edges of a deployment with real processes: a daphne refusing bodies
without a Content-Length, `check --deploy` with the production variables, and a
production server's TLS redirect, HSTS and hashed static files. In-process edges:
tests/project/test_http_edges.py."""

import json
import re
import secrets
import subprocess
import sys

import httpx
import pytest
from asgiref.sync import sync_to_async

from generation.models import GenerationTask
from notifications.models import Event
from tests.conftest import auth
from tests.support.daphne_server import daphne_server
from tests.support.processes import ROOT, process_env
from tests.support.retries import batch_url, fail_contents, statuses

pytestmark = pytest.mark.django_db(transaction=True)


async def chunks(body: bytes):
    """A generator body: httpx sends it with Transfer-Encoding: chunked."""
    yield body[:5]
    yield body[5:]


async def test_chunked_batch_retry_answers_411_and_changes_nothing(tmp_path, alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=3)
    await fail_contents(roadmap, 9)
    before = await statuses(roadmap)
    events_before = await Event.objects.acount()
    body = json.dumps({"concept_ids": ["c001"], "content_types": ["quiz"]}).encode()

    with daphne_server(tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=20) as client:
            request = client.build_request(
                "POST",
                batch_url(roadmap),
                content=chunks(body),
                headers={**auth(alice), "Content-Type": "application/json"},
            )
            assert request.headers["Transfer-Encoding"] == "chunked"
            assert "Content-Length" not in request.headers
            refused = await client.send(request)

            assert refused.status_code == 411, refused.text
            assert "Content-Length" in refused.json()["detail"]
            assert await statuses(roadmap) == before
            assert not await GenerationTask.objects.aexists()
            assert await Event.objects.acount() == events_before

            # The same body with a Content-Length retries exactly the selected pair.
            accepted = await client.post(
                batch_url(roadmap),
                content=body,
                headers={**auth(alice), "Content-Type": "application/json"},
            )

    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["data"]["total"] == 1
    after = await statuses(roadmap)
    changed = {pair for pair in before if after[pair] != before[pair]}
    assert changed == {("c001", "quiz")}


PUBLIC_HOST = "roadmaps.example.com"


def production_env(**extra: str) -> dict[str, str]:
    """DEBUG=0 with a real key and the public host: what docs/deployment.md asks for."""
    env = process_env(
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS=f"{PUBLIC_HOST},127.0.0.1",
        CSRF_TRUSTED_ORIGINS=f"https://{PUBLIC_HOST}",
        **extra,
    )
    for name in ("REDIS_URL", "INSECURE_HTTP"):
        if name not in extra:
            env.pop(name, None)
    return env


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_passes_with_the_production_variables():
    result = check_deploy(production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_insecure_http_is_a_visible_opt_out_in_check_deploy():
    result = check_deploy(production_env(INSECURE_HTTP="1"))

    assert result.returncode == 1
    warned = set(re.findall(r"security\.W\d+", result.stderr))
    # No redirect, no HSTS, no Secure cookies: exactly what the switch turns off.
    assert warned == {"security.W004", "security.W008", "security.W012", "security.W016"}


@pytest.fixture
def production_server(tmp_path):
    """A daphne with DEBUG=0 and the production variables, after `collectstatic`
    (its pages name the hashed files, so it answers 500 without them)."""
    env = production_env(VAR_DIR=str(tmp_path))
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stderr
    assert (tmp_path / "static" / "staticfiles.json").exists()
    with daphne_server(tmp_path, **env) as server:
        yield server


def test_production_daphne_redirects_plain_http_and_sends_hsts(production_server):
    # Host: the public name, as the proxy passes it on.
    client = httpx.Client(base_url=production_server.http_url, headers={"Host": PUBLIC_HOST})
    with client:
        plain = client.get("/admin/login/")
        proxied = client.get("/admin/login/", headers={"X-Forwarded-Proto": "https"})
        probe = client.get("/api/v1/health")

    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://{PUBLIC_HOST}/admin/login/"
    assert proxied.status_code == 200
    assert proxied.headers["Strict-Transport-Security"] == (
        "max-age=31536000; includeSubDomains; preload"
    )
    csrf_cookie = proxied.headers["Set-Cookie"]
    assert csrf_cookie.startswith("csrftoken=") and "Secure" in csrf_cookie
    assert probe.status_code == 200  # load balancers' plain-HTTP probe is not redirected


def test_production_static_files_are_hashed_compressed_and_cached_for_a_year(
    production_server,
):
    proxied = {"Host": PUBLIC_HOST, "X-Forwarded-Proto": "https"}
    with httpx.Client(base_url=production_server.http_url) as client:
        docs = client.get("/api/v1/docs/", headers=proxied)
        assert docs.status_code == 200, docs.text
        # Swagger UI's bundle, by its content-hashed name (ManifestStaticFilesStorage).
        bundle = re.search(
            r'"(/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle\.[0-9a-f]{12}\.js)"',
            docs.text,
        )
        assert bundle, docs.text[:2000]
        asset = client.get(bundle.group(1), headers={**proxied, "Accept-Encoding": "gzip"})
        unhashed = client.get(
            "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
            headers=proxied,
        )

    assert asset.status_code == 200
    assert asset.headers["Content-Encoding"] == "gzip"
    assert asset.headers["Cache-Control"] == "max-age=315360000, public, immutable"
    assert b"SwaggerUIBundle" in asset.content  # httpx decoded the gzip
    assert unhashed.status_code == 200
    assert "immutable" not in unhashed.headers["Cache-Control"]


def test_static_files_collected_as_make_does_serve_a_production_server(tmp_path):
    """`make run` and `make test` collect with DEBUG=1 (the default); a server
    started afterwards with DEBUG=0 finds the manifest and names the hashed files."""
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input"],
        cwd=ROOT,
        env=process_env(VAR_DIR=str(tmp_path), DEBUG="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stderr

    proxied = {"Host": PUBLIC_HOST, "X-Forwarded-Proto": "https"}
    with daphne_server(tmp_path, **production_env(VAR_DIR=str(tmp_path))) as server:
        with httpx.Client(base_url=server.http_url, headers=proxied) as client:
            login = client.get("/login/")
            stylesheet = re.search(
                r'href="(/static/roadmaps/client\.[0-9a-f]{12}\.css)"', login.text
            )
            asset = client.get(stylesheet.group(1)) if stylesheet else None

    assert login.status_code == 200, login.text[:2000]
    assert stylesheet, login.text[:2000]
    assert asset.status_code == 200
    assert asset.headers["Cache-Control"] == "max-age=315360000, public, immutable"
