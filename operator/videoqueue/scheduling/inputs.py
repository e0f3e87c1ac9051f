"""A job's input taken from a dependency's output (spec.input.fromJob), resolved once when its
dependencies have succeeded.

The dependency's worker reported the URL it wrote in its result (status.result.output, or
status.result.outputs for a series). That URL becomes this job's input: it is recorded in
status.resolvedInput and handed to every attempt's worker as spec.input.url, so a retry reads
what the first attempt read even after the dependency is deleted (its TTL).

Pure: the dependency's result comes in as a mapping, the answer goes out as a model or a
message that names the dependency and what to do.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from videoqueue.api import KNOWN_JOB_TYPES, ResolvedInput, VideoJobSpec
from videoqueue.api.job import STOCK_URL_PATTERN, STOCK_URLS
from videoqueue.api.job_payload import MAX_URL_BYTES, URL_FORBIDDEN_CHARACTERS

REASON_INPUT_NOT_RESOLVED: Final = "InputNotResolved"

_STOCK_URL: Final = re.compile(STOCK_URL_PATTERN)
_FORBIDDEN: Final = re.compile(URL_FORBIDDEN_CHARACTERS)


@dataclass(frozen=True)
class SourceJob:
    """What a job with spec.input.fromJob reads of that dependency."""

    name: str
    found: bool  # False: no such job (any more)
    result: Mapping[str, Any] | None = None  # its status.result


@dataclass(frozen=True)
class Unresolved:
    """Why the input cannot be taken from the dependency: the job is rejected with this."""

    message: str


def resolve_input(
    spec: VideoJobSpec, source: SourceJob | None, now: datetime.datetime
) -> ResolvedInput | Unresolved | None:
    """The input of a job whose spec.input.fromJob names `source`, once its dependencies have
    all succeeded. None for a job that reads spec.input.url."""
    name = spec.input.from_job
    if name is None:
        return None
    index = spec.input.output_index
    if source is None or not source.found:
        return Unresolved(
            f"spec.input.fromJob: dependency {name} no longer exists, so its output cannot be "
            f"read; recreate {name} (or set spec.input.url) and recreate this job"
        )
    url = _pick(source.result or {}, name, index)
    if isinstance(url, Unresolved):
        return url
    problem = url_problem(url, spec.type)
    if problem is not None:
        return Unresolved(
            f"spec.input.fromJob: the output of dependency {name} ({_shown(url)}) {problem}; "
            "change that job's spec.output, or set spec.input.url, and recreate this job"
        )
    return ResolvedInput(from_job=name, output_index=index, url=url, resolved_time=now)


def _pick(result: Mapping[str, Any], name: str, index: int | None) -> str | Unresolved:
    single = result.get("output")
    series = result.get("outputs")
    urls: list[Any] = series if isinstance(series, list) else [single] if single else []
    if not urls:
        kind = f"a {result['type']} job" if isinstance(result.get("type"), str) else "it"
        return Unresolved(
            f"spec.input.fromJob: dependency {name} succeeded without an output URL in its "
            f"status.result ({kind} writes no file without spec.output); give {name} a "
            "spec.output, or set spec.input.url, and recreate this job"
        )
    if index is None and len(urls) > 1:
        return Unresolved(
            f"spec.input.fromJob: dependency {name} wrote {len(urls)} outputs "
            f"(status.result.outputs); pick one with spec.input.outputIndex (0 to "
            f"{len(urls) - 1}) and recreate this job"
        )
    chosen = index or 0
    if chosen >= len(urls):
        return Unresolved(
            f"spec.input.outputIndex is {chosen} but dependency {name} wrote "
            f"{len(urls)} output{'s' if len(urls) > 1 else ''} (0 to {len(urls) - 1}); lower "
            "outputIndex and recreate this job"
        )
    url = urls[chosen]
    if not isinstance(url, str) or not url:
        return Unresolved(
            f"spec.input.fromJob: dependency {name} reported an output that is not a URL "
            f"({_shown(str(url))}); check its worker, or set spec.input.url, and recreate "
            "this job"
        )
    return url


def url_problem(url: str, job_type: str) -> str | None:
    """What keeps `url` from being a job's input as the CRD checks spec.input.url at apply
    time (size, characters, the stock types' schemes), or None."""
    if len(url.encode()) > MAX_URL_BYTES:
        return f"is longer than the {MAX_URL_BYTES} bytes an input URL may have"
    if _FORBIDDEN.search(url):
        return "contains control characters, '\"' or '\\'"
    if job_type in KNOWN_JOB_TYPES and not _STOCK_URL.match(url):
        return f"is not what the stock worker reads ({STOCK_URLS})"
    return None


def _shown(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[:limit] + "..."
