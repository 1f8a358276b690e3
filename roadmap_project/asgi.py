"""The ASGI entry point: HTTP (Django) and WebSocket (Channels) in one process."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "roadmap_project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from generation.engine import capture_server_loop  # noqa: E402
from notifications.auth import TokenAuthMiddlewareStack  # noqa: E402
from roadmap_project.routing import websocket_urlpatterns  # noqa: E402

http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_FILES else django_asgi_app

application = capture_server_loop(
    ProtocolTypeRouter(
        {
            "http": http_app,
            "websocket": TokenAuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
        }
    )
)
