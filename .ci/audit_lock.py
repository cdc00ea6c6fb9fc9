"""Audit the pins of requirements.lock for known vulnerabilities (`make audit`).

1. When PyPI's per-release JSON API answers (https://pypi.org/pypi/NAME/VERSION/json, the data
   pip-audit's default service reads), this runs pip-audit itself on the lockfile, `--strict`, so a
   pin that could not be audited fails the run instead of being skipped silently.
2. Some package indexes (mirrors, proxies) serve only the per-project JSON API
   (https://pypi.org/pypi/NAME/json): pip-audit would then skip every pin and report nothing. In
   that case this falls back to that API, which carries PyPI's advisories (PYSEC/GHSA ids) for the
   project's latest release:
   - a pin that is the latest release is audited exactly, as pip-audit would;
   - a pin behind the latest release is checked against the advisories still open in the latest
     release (taken to affect the pin too), but an advisory fixed between the pin and the latest
     release can't be seen: those pins are listed as partially audited, never passed off as clean.
3. When neither answers (no network), the audit fails with a message saying so. It never passes
   without having looked.

Exit status: 0 no known vulnerability, 1 vulnerabilities found (or a pin yanked), 2 the audit could
not run. `--ignore-vuln ID` (repeatable) accepts an advisory, by any of its ids or aliases.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PYPI = "https://pypi.org/pypi"
TRIES = 3
TIMEOUT_SECONDS = 20
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)")


class UnreachableError(Exception):
    """The index did not answer after retries."""


def pins(lockfile: Path) -> list[tuple[str, str]]:
    """(name, version) of every `name==version` line; anything else unpinned is an error."""
    found = []
    for number, raw in enumerate(lockfile.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = PIN.match(line)
        if match is None:
            raise SystemExit(f"audit: {lockfile}:{number}: not an exact pin (name==version): {raw!r}")
        found.append((match.group(1), match.group(2)))
    return found


def fetch(url: str) -> dict[str, Any] | None:
    """JSON at url; None on 404; UnreachableError after TRIES failures of any other kind."""
    last = ""
    for attempt in range(TRIES):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
                data: dict[str, Any] = json.load(response)
                return data
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(2**attempt)
    raise UnreachableError(f"{url}: {last}")


def run_pip_audit(lockfile: Path, ignored: list[str]) -> int:
    """pip-audit on the lockfile (exact pins, no resolution), failing on any pin it could not audit."""
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--requirement",
        str(lockfile),
        "--no-deps",
        "--disable-pip",
        "--strict",
        "--progress-spinner",
        "off",
        *(arg for vuln in ignored for arg in ("--ignore-vuln", vuln)),
    ]
    print("audit: PyPI's per-release vulnerability API answers; running", " ".join(command[2:]), flush=True)
    code = subprocess.call(command)
    if code not in (0, 1):
        return 2
    return code


def audit_latest_releases(lockfile: Path, pinned: list[tuple[str, str]], ignored: set[str]) -> int:
    """The fallback: PyPI's per-project JSON API (advisories of each project's latest release)."""
    print(
        "audit: PyPI's per-release JSON API is not served by this index (HTTP 404), so pip-audit would skip "
        "every pin; auditing with the per-project JSON API instead (advisories of each latest release)",
        flush=True,
    )
    findings: list[str] = []
    behind: list[str] = []
    exact = 0
    for name, version in pinned:
        project = fetch(f"{PYPI}/{name}/json")
        if project is None:
            findings.append(f"{name}=={version}: not on the index, cannot be audited")
            continue
        latest = str(project["info"]["version"])
        files = project.get("releases", {}).get(version)
        if files and all(f.get("yanked") for f in files):
            reason = files[0].get("yanked_reason") or "no reason given"
            findings.append(f"{name}=={version}: yanked from PyPI ({reason})")
        reported: set[str] = set()  # PyPI lists one advisory under each of its ids (PYSEC, GHSA)
        for vuln in project.get("vulnerabilities") or []:
            ids = {vuln["id"], *(vuln.get("aliases") or [])}
            if vuln.get("withdrawn") or ids & ignored or vuln["id"] in reported:
                continue
            reported |= ids
            fixed = ", ".join(vuln.get("fixed_in") or []) or "no fixed release"
            where = "the pinned release" if version == latest else f"latest {latest}, so likely the pin too"
            findings.append(
                f"{name}=={version}: {vuln['id']} ({', '.join(sorted(ids - {vuln['id']}))}) in {where}; fixed in: {fixed}; {vuln.get('link', '')}"
            )
        if version == latest:
            exact += 1
        else:
            behind.append(f"{name}=={version} (latest {latest})")
    print(f"audit: {len(pinned)} pins; {exact} are their project's latest release and were audited exactly")
    if behind:
        print(
            f"audit: {len(behind)} pins are behind their latest release; advisories open in the latest release were "
            "checked, advisories fixed after the pin can't be seen through this index: " + "; ".join(behind)
        )
    for finding in findings:
        print(f"audit: VULNERABLE {finding}")
    if findings:
        print(f"audit: {len(findings)} finding(s): upgrade the pin in {lockfile} or add --ignore-vuln ID with a reason")
        return 1
    print("audit: no known vulnerabilities found")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lockfile", type=Path)
    parser.add_argument("--ignore-vuln", action="append", default=[], metavar="ID")
    args = parser.parse_args()
    pinned = pins(args.lockfile)
    if not pinned:
        print(f"audit: no pins in {args.lockfile}", file=sys.stderr)
        return 2
    try:
        name, version = pinned[0]
        if fetch(f"{PYPI}/{name}/{version}/json") is not None:
            return run_pip_audit(args.lockfile, args.ignore_vuln)
        return audit_latest_releases(args.lockfile, pinned, set(args.ignore_vuln))
    except UnreachableError as exc:
        print(
            f"audit: FAILED, the vulnerability data could not be fetched ({exc}); "
            "no pin was audited. Check the network or the index, then rerun `make audit`.",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
