"""What OPTIONS answers on an API endpoint."""

from rest_framework.metadata import SimpleMetadata


class DescriptionMetadata(SimpleMetadata):
    """The view's name, description and media types, without `actions`: request
    bodies are described by the OpenAPI schema (/api/v1/schema/). DRF's
    SimpleMetadata builds the view's serializer for each writable method, and the
    viewsets whose actions each declare their own input (retry, retry-batch,
    generate, cancel) have no view-wide serializer to build: OPTIONS answered 500."""

    def determine_actions(self, request, view) -> dict:
        return {}
