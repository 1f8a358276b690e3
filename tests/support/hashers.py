"""A password hasher for in-process tests: Django's PBKDF2 with few iterations."""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's default algorithm and format with a thousand iterations instead of
    1.5 million: a password check takes a millisecond, not half a second (the login
    throttling tests make dozens). Who may log in, and how often, does not depend
    on the count."""

    iterations = 1000
