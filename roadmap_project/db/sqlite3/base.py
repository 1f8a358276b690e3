"""The SQLite backend Django loads by its ENGINE path (`<ENGINE>.base`): Django's
own, with the writer queue of roadmap_project.patches.django."""

from roadmap_project.patches.django import DatabaseWrapper

__all__ = ["DatabaseWrapper"]
