"""JUnit XML files that a Jenkins `junit` step reads.

Every file bgci writes, whether built here with junit-xml or collected from a
test harness, goes through :func:`normalize`. The result always has a
``<testsuites>`` root, suites sorted by name (harnesses such as
TAP::Harness::JUnit emit them in hash order), the counts Jenkins reads on every
suite (tests, failures, errors, skipped, time), a classname and name on every
test case, and ``bgci.*`` properties that name exactly what was tested.

Files are named by kind and sha (:func:`report_path`), e.g.
``test-results/unit-<sha>.xml`` and ``test-results/smoke-<sha>.xml``, so a
Jenkins job can archive one known path per run.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bgci.files import write_atomic

if TYPE_CHECKING:
    import junit_xml  # imported where a report is made: a passing `bgci test` never needs it

COUNT_ATTRIBUTES = ("tests", "failures", "errors", "skipped")


@dataclass(frozen=True)
class Summary:
    """What a JUnit document says, counted from its test cases (as Jenkins counts them)."""

    suites: int
    tests: int
    failures: int
    errors: int
    skipped: int
    time: float
    failed: tuple[str, ...] = ()  # "classname: name" of each failing or erroring case

    @property
    def passed(self) -> bool:
        return self.failures == 0 and self.errors == 0


def report_path(directory: Path, kind: str, name: str) -> Path:
    """`<directory>/<kind>-<name>.xml`, with `name` reduced to characters safe in a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "unnamed"
    return Path(directory) / f"{kind}-{safe}.xml"


def case(name: str, classname: str, seconds: float, *, failure: str = "", output: str = "",
         failure_type: str = "failure") -> junit_xml.TestCase:
    """One test case; a non-empty `failure` message makes it fail, `output` goes to system-out or the failure."""
    import junit_xml

    test_case = junit_xml.TestCase(name, classname=classname, elapsed_sec=seconds)
    if failure:
        test_case.add_failure_info(message=failure, output=output or None, failure_type=failure_type)
    elif output:
        test_case.stdout = output
    return test_case


def suite(name: str, cases: Sequence[junit_xml.TestCase]) -> junit_xml.TestSuite:
    import junit_xml

    return junit_xml.TestSuite(name, list(cases))


def render(suites: Sequence[junit_xml.TestSuite], name: str, properties: Mapping[str, str]) -> bytes:
    """A document written by junit-xml, normalised like every other file bgci writes."""
    import junit_xml

    text = junit_xml.to_xml_report_string(list(suites), prettyprint=False)
    return normalize(text.encode("utf-8"), name, properties)


def normalize(data: bytes, name: str, properties: Mapping[str, str]) -> bytes:
    """Make `data` a document Jenkins reads in full; raise ValueError when it is not JUnit XML at all."""
    return _finish(_suites(parse(data)), name, properties)


def merge(documents: Sequence[bytes], name: str) -> bytes:
    """Several JUnit documents as one (their suites side by side)."""
    return _finish([suite for data in documents for suite in _suites(parse(data))], name, {})


def parse(data: bytes) -> ET.Element:
    """The root of a JUnit document (`<testsuites>` or a single `<testsuite>`); ValueError otherwise."""
    if not data.strip():
        raise ValueError("the file is empty")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML: {exc}") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise ValueError(f"root element is <{root.tag}>, not <testsuites> or <testsuite>")
    for suite in [root] if root.tag == "testsuite" else root.iter("testsuite"):
        for key in (*COUNT_ATTRIBUTES, "time"):
            value = suite.get(key)
            if value is not None and not _is_number(value):
                raise ValueError(f"testsuite {suite.get('name', '?')!r}: {key}={value!r} is not a number")
    return root


def summarize(data: bytes) -> Summary:
    """Counts of a JUnit document, taken from its test cases; ValueError when it is not JUnit XML."""
    suites = _suites(parse(data))
    cases = [c for s in suites for c in s.iter("testcase")]
    failed = tuple(f"{c.get('classname', '')}: {c.get('name', '')}" for c in cases
                   if c.find("failure") is not None or c.find("error") is not None)
    return Summary(
        suites=len(suites),
        tests=len(cases),
        failures=sum(1 for c in cases if c.find("failure") is not None),
        errors=sum(1 for c in cases if c.find("error") is not None and c.find("failure") is None),
        skipped=sum(1 for c in cases if c.find("skipped") is not None),
        time=sum(float(s.get("time") or 0) for s in suites),
        failed=failed,
    )


def write(path: Path, data: bytes) -> Path:
    """Write atomically (a Jenkins step reading meanwhile sees the old file or the new one, never half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return path


def _suites(root: ET.Element) -> list[ET.Element]:
    return root.findall("testsuite") if root.tag == "testsuites" else [root]


def _finish(suites: list[ET.Element], name: str, properties: Mapping[str, str]) -> bytes:
    suites.sort(key=lambda suite: suite.get("name", ""))
    for suite in suites:
        _complete_suite(suite, properties)
    document = ET.Element("testsuites", {"name": name})
    document.extend(suites)
    for key in COUNT_ATTRIBUTES:
        document.set(key, str(sum(int(float(s.get(key, "0"))) for s in suites)))
    document.set("time", _seconds(sum(float(s.get("time", "0")) for s in suites)))
    ET.indent(document)
    return ET.tostring(document, encoding="utf-8", xml_declaration=True) + b"\n"


def _complete_suite(suite: ET.Element, properties: Mapping[str, str]) -> None:
    """Fill in what Jenkins reads and a harness may have left out; keep every count the harness wrote."""
    suite_name = suite.get("name") or "unnamed"
    suite.set("name", suite_name)
    cases = suite.findall("testcase")
    for test_case in cases:
        test_case.set("classname", test_case.get("classname") or suite_name)
        test_case.set("name", test_case.get("name") or "unnamed")
        time = test_case.get("time") or "0"
        test_case.set("time", time if _is_number(time) else "0")  # Jenkins cannot read "1,5" or "n/a"
    counted = {
        "tests": len(cases),
        "failures": sum(1 for c in cases if c.find("failure") is not None),
        "errors": sum(1 for c in cases if c.find("error") is not None),
        "skipped": sum(1 for c in cases if c.find("skipped") is not None),
    }
    for key, value in counted.items():
        if suite.get(key) is None:
            suite.set(key, str(value))
        else:
            suite.set(key, str(int(float(suite.get(key, "0")))))
    if suite.get("time") is None:
        suite.set("time", _seconds(sum(float(c.get("time") or 0) for c in cases)))
    if properties:
        _add_properties(suite, properties)


def _add_properties(suite: ET.Element, properties: Mapping[str, str]) -> None:
    """Put bgci's properties first in the suite, where the JUnit schema wants <properties>."""
    element = suite.find("properties")
    if element is None:
        element = ET.Element("properties")
        suite.insert(0, element)
    for key, value in properties.items():
        ET.SubElement(element, "property", {"name": key, "value": value})


def _is_number(text: str) -> bool:
    try:
        return abs(float(text)) < 1e15
    except ValueError:
        return False


def _seconds(value: float) -> str:
    return f"{value:.3f}"
