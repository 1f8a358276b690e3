from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """Every path answers with and without its trailing slash (DESIGN §4). Each
    app routes its own viewsets with one; the project URLconf includes both, and
    generation's viewsets register under the roadmaps' prefix for their actions."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
