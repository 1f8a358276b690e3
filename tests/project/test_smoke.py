import pytest

pytestmark = pytest.mark.django_db(transaction=True)


async def test_health_answers_ok(api):
    response = await api.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"
