"""Fixtures of the project-wide API tests."""

import pytest


@pytest.fixture
async def schema(api) -> dict:
    response = await api.get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    return response.json()
