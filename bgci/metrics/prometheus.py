"""Prometheus' HTTP API: a thin client on one configured Session, and typed readers of its answers.

Only instant queries are needed (`/api/v1/query`). The readers turn the JSON into
:class:`QueryResult` and name the field at fault in every malformed answer (a proxy
page, another API, a value of the wrong type), like the Marathon readers. Transport
errors become :class:`PrometheusError` once, here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bgci.errors import PrometheusError

_REQUIRED: Any = object()


# -- typed readers ----------------------------------------------------------------------------------------
def malformed(where: str, problem: str) -> PrometheusError:
    return PrometheusError(f"Prometheus' answer is malformed: {where}: {problem}",
                           hint="is metrics.prometheus_url a Prometheus 2.x server (not a proxy page)?")


def _show(value: Any) -> str:
    return json.dumps(value)[:60]


def _read(obj: Any, key: str, kind: type, where: str, default: Any = _REQUIRED) -> Any:
    if not isinstance(obj, dict):
        raise malformed(where, f"expected an object, got {_show(obj)}")
    value = obj.get(key)
    if value is None:
        if default is _REQUIRED:
            raise malformed(f"{where}.{key}", "missing")
        return default
    if not isinstance(value, kind) or isinstance(value, bool):
        raise malformed(f"{where}.{key}", f"expected {kind.__name__}, got {_show(value)}")
    return value


def read_sample_value(value: Any, where: str) -> tuple[float, float]:
    """`[<unix time>, "<number>"]` -> (time, value); "NaN", "+Inf" and "-Inf" read as floats."""
    if not isinstance(value, list) or len(value) != 2:
        raise malformed(where, f"expected [time, \"value\"], got {_show(value)}")
    timestamp, text = value
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        raise malformed(f"{where}[0]", f"expected a number, got {_show(timestamp)}")
    if not isinstance(text, str):
        raise malformed(f"{where}[1]", f"expected a string, got {_show(text)}")
    try:
        return float(timestamp), float(text)
    except ValueError:
        raise malformed(f"{where}[1]", f"not a number: {_show(text)}") from None


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector: its labels and value (NaN when Prometheus says NaN)."""

    labels: dict[str, str]
    time: float
    value: float


@dataclass(frozen=True)
class QueryResult:
    """An instant query's answer: a vector (0..n samples) or a scalar (one unlabelled sample)."""

    result_type: str
    samples: tuple[Sample, ...]
    warnings: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def value(self) -> float | None:
        """The one sample's value; None for no sample or NaN (no data). More than one is a malformed answer."""
        if len(self.samples) > 1:
            raise malformed("data.result", f"expected at most one sample, got {len(self.samples)}")
        if not self.samples or math.isnan(self.samples[0].value):
            return None
        return self.samples[0].value

    def by(self, label: str) -> dict[str, float]:
        """{label value: sample value} of a vector, NaN samples left out."""
        return {s.labels.get(label, ""): s.value for s in self.samples if not math.isnan(s.value)}


def read_query_answer(body: Any, where: str = "query") -> QueryResult:
    """The JSON of a successful /api/v1/query answer as a QueryResult."""
    status = _read(body, "status", str, where)
    if status != "success":
        raise malformed(f"{where}.status", f"expected \"success\", got {_show(status)}")
    data = _read(body, "data", dict, where)
    result_type = _read(data, "resultType", str, f"{where}.data")
    result = data.get("result")
    if result_type == "scalar":
        samples = (Sample({}, *read_sample_value(result, f"{where}.data.result")),)
    elif result_type == "vector":
        if not isinstance(result, list):
            raise malformed(f"{where}.data.result", f"expected a list, got {_show(result)}")
        samples = tuple(_read_vector_sample(item, f"{where}.data.result[{i}]") for i, item in enumerate(result))
    else:
        raise malformed(f"{where}.data.resultType", f"expected \"vector\" or \"scalar\", got {_show(result_type)}")
    warnings = body.get("warnings") or []
    return QueryResult(result_type, samples, tuple(str(w) for w in warnings) if isinstance(warnings, list) else (),
                       attrs=body)


def _read_vector_sample(item: Any, where: str) -> Sample:
    metric = _read(item, "metric", dict, where, default={})
    for key, value in metric.items():
        if not isinstance(value, str):
            raise malformed(f"{where}.metric.{key}", f"expected str, got {_show(value)}")
    return Sample(dict(metric), *read_sample_value(_read(item, "value", list, where), f"{where}.value"))


def read_error_answer(response: requests.Response) -> str:
    """Prometheus' own reason from an error answer (`errorType: error`), else the start of the body."""
    try:
        body = response.json()
        return f"{body.get('errorType', 'error')}: {body['error']}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.text[:200].strip() or response.reason


# -- the client ---------------------------------------------------------------------------------------------
class PrometheusClient:
    """Instant PromQL queries against one Prometheus, on one Session with retries on connection errors."""

    def __init__(self, url: str, *, timeout: float = 10.0, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or self._session()

    @staticmethod
    def _session() -> requests.Session:
        session = requests.Session()
        # Queries are reads: a refused connection or a 502/503 from a restarting server is tried again.
        retry = Retry(total=3, connect=3, read=1, status=2, backoff_factor=0.2, allowed_methods={"GET"},
                      status_forcelist=(502, 503, 504), raise_on_status=False)
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        return session

    def query(self, expr: str, at: float | None = None) -> QueryResult:
        """Evaluate `expr` now, or at unix time `at`."""
        params: dict[str, str] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            response = self.session.get(f"{self.url}/api/v1/query", params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise PrometheusError(f"Prometheus at {self.url} does not answer: {type(exc).__name__}",
                                  hint="check metrics.prometheus_url (or BGCI_PROMETHEUS_URL)") from exc
        if response.status_code != 200:
            raise PrometheusError(f"Prometheus refused the query {expr!r}: HTTP {response.status_code} "
                                  f"{read_error_answer(response)}", status_code=response.status_code)
        try:
            body = response.json()
        except ValueError:
            raise malformed("query", f"not JSON: {response.text[:60]!r}") from None
        return read_query_answer(body)

    def check(self) -> None:
        """Raise PrometheusError unless Prometheus answers a trivial query (before changing anything)."""
        if self.query("vector(1)").value() != 1.0:
            raise malformed("query vector(1)", "did not answer 1")
