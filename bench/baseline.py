"""The product as it was at an earlier commit: the "before" of a benchmark that
measures before and after in the same run, on the same machine, with the same
benchmark code. The commit's files are exported once (`git archive`, so no
worktree is registered) into the temp directory and run with this virtualenv's
interpreter, from their own directory: `python manage.py`, daphne and
`python -c` there import the old product, not this one."""

import subprocess
import tarfile
import tempfile
from pathlib import Path

from tests.support.processes import ROOT


def tree(commit: str) -> Path:
    """The directory of `commit`'s files; SystemExit when this checkout cannot
    give them (no git, or history without that commit)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"commit {commit} is not in this checkout: {error}") from error
    path = Path(tempfile.gettempdir()) / f"roadmap-bench-{sha[:12]}"
    if (path / "manage.py").exists():
        return path
    staging = Path(tempfile.mkdtemp(prefix=f"{path.name}-", dir=path.parent))
    with subprocess.Popen(
        ["git", "archive", "--format=tar", sha], cwd=ROOT, stdout=subprocess.PIPE
    ) as archive:
        with tarfile.open(fileobj=archive.stdout, mode="r|") as files:
            files.extractall(staging, filter="data")
    if archive.returncode:
        raise SystemExit(f"git archive {sha} failed ({archive.returncode})")
    staging.rename(path)  # whole or not at all: a half export is never reused
    return path
