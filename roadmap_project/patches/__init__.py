"""Code of other libraries this project patches or builds on through private APIs,
one module per library: a subclass named in settings (channels, channels_redis,
django's SQLite backend), a base class (django's ASGI handler), a reader (asgiref) or a patch
applied once from the ASGI entry point (daphne). Each has a test that fails when the
upstream code it relies on changes (tests/project/test_patches.py); why, and the pinned
versions: docs/decisions/0011-framework-patches.md."""
