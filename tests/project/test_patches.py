"""Each patch of another library (roadmap_project/patches/) relies on upstream code
as it is in the pinned version; these fail when that code changes, so the patch is
looked at again (and dropped once upstream does the job)."""

import inspect

from daphne.ws_protocol import WebSocketProtocol

import roadmap_project.asgi  # noqa: F401  (applies the patches)
from roadmap_project.patches import daphne as daphne_patch


def test_daphne_still_drops_the_close_reason_and_the_patch_is_applied():
    upstream = inspect.getsource(daphne_patch.upstream_handle_reply)

    assert 'self.serverClose(code=message.get("code", None))' in upstream
    assert "reason" not in upstream  # when daphne passes it on, drop the patch
    assert WebSocketProtocol.handle_reply is daphne_patch.handle_reply
