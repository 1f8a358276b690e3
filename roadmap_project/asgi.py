"""The ASGI entry point: HTTP (Django) and WebSocket (Channels) in one process."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "roadmap_project.settings")
django.setup(set_prefix=False)

from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402

from roadmap_project.collector import settle_after_start_up  # noqa: E402
from roadmap_project.handlers import LaneASGIHandler, RequireContentLength  # noqa: E402
from roadmap_project.patches import daphne as daphne_patch  # noqa: E402

daphne_patch.apply()

# REQUEST_THREADS=0 keeps Django's own handler (a thread per request), for comparison.
django_asgi_app = LaneASGIHandler() if settings.REQUEST_THREADS else ASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from generation.engine import capture_server_loop  # noqa: E402
from generation.providers import load_provider  # noqa: E402
from generation.providers.config import refuse_to_start_if_misconfigured  # noqa: E402
from notifications.auth import TokenAuthMiddlewareStack  # noqa: E402
from roadmap_project.routing import websocket_urlpatterns  # noqa: E402

# Bodies without a Content-Length never reach Django (roadmap_project/handlers.py).
# Static files are served by WhiteNoise's middleware (settings.py, SERVE_FILES).
refuse_to_start_if_misconfigured()
load_provider()
http_app = RequireContentLength(django_asgi_app)

application = capture_server_loop(
    ProtocolTypeRouter(
        {
            "http": http_app,
            "websocket": TokenAuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
        }
    )
)

# Last: what start-up made is frozen out of every later collection.
settle_after_start_up()
