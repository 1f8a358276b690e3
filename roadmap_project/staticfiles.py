"""Static files: the storage `collectstatic` writes with, and WhiteNoise's
middleware answering ASGI requests with an async body.

WhiteNoise (6.x) hands Django a FileResponse over a plain file; under ASGI Django
then warns on every static request and reads the file through `sync_to_async` on
the event loop's side. Static files are small and already open, so the file is
read here, on the request's own thread, and handed over as one async chunk."""

from collections.abc import AsyncIterator

from django.contrib.staticfiles.storage import HashedFilesMixin
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware
from whitenoise.responders import StaticFile
from whitenoise.storage import CompressedManifestStaticFilesStorage


class DevelopmentStaticFilesStorage(CompressedManifestStaticFilesStorage):
    """The storage of a process started with DEBUG: `collectstatic` writes what
    production serves (hashed names, compressed copies, the manifest), so a
    server later started with DEBUG=0 finds them; pages name the plain files,
    which WhiteNoise serves from the apps, and need no collectstatic (tests turn
    DEBUG off after start-up, and would otherwise look for a manifest)."""

    def url(self, name: str | None, force: bool = False) -> str:
        return super(HashedFilesMixin, self).url(name)  # the plain name, never hashed


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
