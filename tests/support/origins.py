"""A frontend on another origin: the origins the CORS tests allow, and what a
browser sends and reads."""

import httpx

FRONTEND = "https://app.example.com"
DEV_SERVER = "http://localhost:5173"


def preflight(origin: str) -> dict[str, str]:
    """What a browser sends before a JSON POST carrying a token."""
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


def header_list(response: httpx.Response, name: str) -> set[str]:
    return {item.strip().lower() for item in response.headers.get(name, "").split(",")}
