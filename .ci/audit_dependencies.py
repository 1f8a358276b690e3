"""Audit every installed distribution (requirements.txt and what it pulls in)
against the known vulnerabilities PyPI publishes (`make audit`, run by .ci/run).

Why not pip-audit: on this project's network OSV is unreachable, and pip-audit's
PyPI service asks each release's own page (/pypi/<name>/<version>/json), which
answers 404 here for every pin; pip-audit then reports every dependency "not
found" and audits nothing. The project page (/pypi/<name>/json) does answer, and
its `vulnerabilities` are those of the latest release: exact for a distribution
installed at its latest release. Anything else is audited through its release page
when that answers, and otherwise listed as not audited, with the reason.

Exit status: 1 if a vulnerability is found or PyPI cannot be reached (an audit
that could not run must not pass), else 0. Distributions not audited are listed,
not failed: every new upstream release would otherwise fail CI for a pin that
merely aged. The list is in CI's output; upgrading a pin puts it back in the audit.
The JavaScript vendored in roadmaps/static/roadmaps/vendor/ is not covered."""

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import distributions

import httpx

PYPI = "https://pypi.org/pypi"


@dataclass
class Audit:
    name: str
    version: str
    vulnerabilities: list[dict]
    not_audited: str = ""


def installed() -> dict[str, str]:
    return {dist.metadata["Name"]: dist.version for dist in distributions()}


def audit(client: httpx.Client, name: str, version: str) -> Audit:
    project = client.get(f"{PYPI}/{name}/json")
    if project.status_code == 404:
        return Audit(name, version, [], "not on PyPI")
    project.raise_for_status()
    latest = project.json()["info"]["version"]
    if latest == version:
        return Audit(name, version, active(project.json()))
    release = client.get(f"{PYPI}/{name}/{version}/json")
    if release.status_code == 200:
        return Audit(name, version, active(release.json()))
    return Audit(
        name, version, [], f"its release page answers {release.status_code}; latest is {latest}"
    )


def active(page: dict) -> list[dict]:
    return [vuln for vuln in page.get("vulnerabilities") or [] if not vuln.get("withdrawn")]


def main() -> int:
    packages = installed()
    try:
        with httpx.Client(timeout=20, follow_redirects=True) as client:
            with ThreadPoolExecutor(16) as pool:
                audits = list(pool.map(lambda item: audit(client, *item), sorted(packages.items())))
    except httpx.HTTPError as error:
        print(f"audit could not run: PyPI is unreachable ({error})", file=sys.stderr)
        return 1
    found = [a for a in audits if a.vulnerabilities]
    skipped = [a for a in audits if a.not_audited]
    for a in found:
        for vuln in a.vulnerabilities:
            fixed = ", ".join(vuln.get("fixed_in") or []) or "no fixed release"
            link = vuln.get("link", "")
            print(f"VULNERABLE {a.name}=={a.version}: {vuln['id']} (fixed in {fixed}) {link}")
    for a in skipped:
        print(f"not audited {a.name}=={a.version}: {a.not_audited}")
    print(
        f"audited {len(audits) - len(skipped)} of {len(audits)} installed distributions: "
        f"{sum(len(a.vulnerabilities) for a in found)} known vulnerabilities"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
