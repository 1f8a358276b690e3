"""WhiteNoise's middleware, answering ASGI requests with an async body.

WhiteNoise (6.x) hands Django a FileResponse over a plain file; under ASGI Django
then warns on every static request and reads the file through `sync_to_async` on
the event loop's side. Static files are small and already open, so the file is
read here, on the request's own thread, and handed over as one async chunk."""

from collections.abc import AsyncIterator

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware
from whitenoise.responders import StaticFile


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoiseMiddleware whose responses to ASGI requests stream asynchronously."""

    @staticmethod
    def serve(static_file: StaticFile, request: HttpRequest) -> HttpResponseBase:
        response = WhiteNoiseMiddleware.serve(static_file, request)
        if isinstance(request, ASGIRequest) and response.streaming and not response.is_async:
            body = b"".join(response.streaming_content)

            async def once() -> AsyncIterator[bytes]:
                yield body

            response.streaming_content = once()
        return response
