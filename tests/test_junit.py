"""JUnit files: what a Jenkins `junit` step reads, from junit-xml documents and from harness output alike.

`assert_jenkins_readable` is the check every suite here applies to every file
bgci writes: well-formed, a <testsuites> root, the counts Jenkins reads on each
suite and test cases with a classname and a name.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import junit_xml
import pytest

from bgci import junit

SUITE_ATTRIBUTES = ("tests", "failures", "errors", "skipped", "time")


def assert_jenkins_readable(path: Path) -> ET.Element:
    """Parse `path` as Jenkins would and check the attributes it reads; return the root."""
    root = ET.parse(path).getroot()  # raises on anything not well-formed
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert suites, "a report without a suite gives Jenkins nothing to show"
    for suite in suites:
        for key in SUITE_ATTRIBUTES:
            float(suite.attrib[key])  # present and numeric on every suite
        assert suite.get("name")
        for case in suite.iter("testcase"):
            assert case.get("classname") and case.get("name"), ET.tostring(case)
            float(case.attrib["time"])
    for key in SUITE_ATTRIBUTES:
        float(root.attrib[key])
    return root


def test_report_names_are_kind_and_a_file_safe_name(tmp_path: Path) -> None:
    # Jenkins jobs archive one known path per run: test-results/unit-<sha>.xml, smoke-<name>.xml.
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert junit.report_path(tmp_path, "unit", sha) == tmp_path / f"unit-{sha}.xml"
    # A URL-ish name cannot escape the directory or contain separators.
    assert junit.report_path(tmp_path, "smoke", "../127.0.0.1:8080/x").name == "smoke-127.0.0.1-8080-x.xml"
    assert junit.report_path(tmp_path, "smoke", "///").name == "smoke-unnamed.xml"


def test_render_counts_cases_and_names_what_was_tested(tmp_path: Path) -> None:
    ok = junit.case("health", "smoke.url", 0.01, output="GET / -> 200")
    failed = junit.case("revision", "smoke.url", 0.02, failure="status 500, expected 200", output="GET / -> 500")
    skipped = junit_xml.TestCase("later", classname="smoke.url")
    skipped.add_skipped_info("not yet")
    data = junit.render([junit_xml.TestSuite("smoke.url", [ok, failed, skipped])], "smoke x",
                        {"bgci.sha": "abc", "bgci.digest": "sha256:def"})
    root = assert_jenkins_readable(junit.write(tmp_path / "r.xml", data))

    suite = root.find("testsuite")
    assert suite is not None
    # The counts Jenkins shows come from these attributes: 3 cases, 1 failing, 1 skipped.
    assert [suite.get(k) for k in ("tests", "failures", "errors", "skipped")] == ["3", "1", "0", "1"]
    assert root.get("tests") == "3" and root.get("skipped") == "1"
    # The failure message is the reason a user reads in Jenkins.
    assert suite.find("testcase[@name='revision']/failure").get("message") == "status 500, expected 200"
    # Properties come first in the suite (the JUnit schema's order) and name what was tested.
    assert suite[0].tag == "properties"
    assert {p.get("name"): p.get("value") for p in suite[0]} == {"bgci.sha": "abc", "bgci.digest": "sha256:def"}
    # A case junit-xml wrote without a time still gets one (0).
    assert suite.find("testcase[@name='later']").get("time") == "0"

    summary = junit.summarize(data)
    assert (summary.tests, summary.failures, summary.errors, summary.skipped) == (3, 1, 0, 1)
    assert summary.failed == ("smoke.url: revision",) and not summary.passed


def test_harness_output_is_sorted_completed_and_keeps_its_counts() -> None:
    # TAP::Harness::JUnit writes suites in hash order and leaves some attributes out; another harness
    # may write a single <testsuite> root. bgci's file must be the same whatever the order.
    harness = b"""<?xml version='1.0'?>
<testsuites>
  <testsuite name="t_02" tests="2" failures="1" errors="0" time="0.5">
    <testcase name="b1" classname="t_02" time="0.1"/>
    <testcase name="b2"><failure message="got 1, expected 2" type="TestFailed">not ok 2</failure></testcase>
  </testsuite>
  <testsuite name="t_01"><testcase name="a1" time="n/a"/></testsuite>
</testsuites>"""
    first = junit.normalize(harness, "unit abc", {"bgci.sha": "abc"})
    swapped = harness.replace(b'name="t_02"', b'name="t_00"')
    root = ET.fromstring(first)
    assert [s.get("name") for s in root.findall("testsuite")] == ["t_01", "t_02"]  # sorted by name
    t_01, t_02 = root.findall("testsuite")
    # Missing counts are counted from the cases; counts the harness wrote are kept as written.
    assert (t_01.get("tests"), t_01.get("failures"), t_01.get("skipped"), t_01.get("time")) == ("1", "0", "0", "0.000")
    assert (t_02.get("tests"), t_02.get("failures"), t_02.get("skipped"), t_02.get("time")) == ("2", "1", "0", "0.5")
    # A case without a classname gets its suite's name (Jenkins groups by it); an unreadable time becomes 0.
    assert t_02.find("testcase[@name='b2']").get("classname") == "t_02"
    assert t_01.find("testcase").get("time") == "0"
    assert root.get("tests") == "3" and root.get("failures") == "1"
    assert [s.get("name") for s in ET.fromstring(junit.normalize(swapped, "u", {})).findall("testsuite")] == [
        "t_00", "t_01"]

    single = junit.normalize(b'<testsuite name="only"><testcase name="x" classname="c" time="1"/></testsuite>',
                             "u", {})
    assert ET.fromstring(single).tag == "testsuites"  # always wrapped


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"<testsuites><testsuite name='x'>", "not well-formed"),
    (b"<html><body>500</body></html>", "root element is <html>"),
    (b"<testsuite name='x' tests='many'/>", "tests='many' is not a number"),
    (b"<testsuite name='x' time='nan'/>", "is not a number"),
])
def test_broken_documents_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    # testing.py turns this ValueError into bgci's own failing report, quoting the reason.
    with pytest.raises(ValueError, match=reason):
        junit.normalize(data, "u", {})


def test_merge_puts_suites_side_by_side() -> None:
    a = junit.render([junit_xml.TestSuite("b", [junit.case("x", "b", 0.1)])], "a", {})
    b = junit.render([junit_xml.TestSuite("a", [junit.case("y", "a", 0.2, failure="no")])], "b", {})
    merged = ET.fromstring(junit.merge([a, b], "both"))
    assert [s.get("name") for s in merged.findall("testsuite")] == ["a", "b"]
    assert (merged.get("name"), merged.get("tests"), merged.get("failures")) == ("both", "2", "1")


def test_write_replaces_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "unit-x.xml"
    junit.write(target, b"<old/>")
    junit.write(target, b"<new/>")
    # The directory is created; the second write replaced the first; no .tmp file is left for Jenkins to pick up.
    assert target.read_bytes() == b"<new/>"
    assert sorted(p.name for p in target.parent.iterdir()) == ["unit-x.xml"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"  # readable by the Jenkins agent user
