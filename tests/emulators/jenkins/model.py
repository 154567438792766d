"""The pure state of the Jenkins emulator: job configurations, items, builds and the queue.

Nothing here touches the OS (no processes, no files, no sockets): ``JenkinsState`` is a model
that the HTTP routes read and change under its lock, and that the runtime asks which queued
items may start (``dispatch``). Messages are Jenkins' own (core ``Messages.properties``).
"""

from __future__ import annotations

import re
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

FREESTYLE = "hudson.model.FreeStyleProject"
FOLDER = "com.cloudbees.hudson.plugins.folder.Folder"
_ROOT_TAGS = {"project": FREESTYLE, FOLDER: FOLDER}

P = "hudson.plugins.parameterizedtrigger."
BINDING = "org.jenkinsci.plugins.credentialsbinding.impl."
RESULT_ORDER = {"SUCCESS": 0, "UNSTABLE": 1, "FAILURE": 2, "NOT_BUILT": 3, "ABORTED": 4}
COLORS = {"SUCCESS": "blue", "UNSTABLE": "yellow", "FAILURE": "red", "ABORTED": "aborted",
          "NOT_BUILT": "notbuilt"}
_UNSAFE = "?*/\\%!@#$^&|<>[]:;"


class Failure(Exception):
    """hudson.model.Failure: rendered as a 400 page with an X-Error header."""


class ServerError(Exception):
    """An exception Stapler does not map: a 500 page."""


class NotFound(Exception):
    """A 404."""


def worse(a: str | None, b: str) -> str:
    """Run.setResult only ever makes a result worse."""
    if a is None or RESULT_ORDER[b] > RESULT_ORDER[a]:
        return b
    return a


def check_good_name(name: str) -> None:
    """jenkins.model.Jenkins.checkGoodName."""
    if not name.strip():
        raise Failure("No name is specified")
    for c in name:
        if c in _UNSAFE or ord(c) < 32:
            raise Failure(f"\u2018{c}\u2019 is an unsafe character")
    if name in (".", ".."):
        raise Failure(f"\u201c{name}\u201d is not an allowed name")


def timespan(ms: float) -> str:
    """hudson.Util.getTimeSpanString, enough of it: '4.9 sec', '12 sec', '1 min 5 sec'."""
    s = max(ms, 0) / 1000
    if s < 10:
        return f"{s:.1f} sec"
    if s < 60:
        return f"{int(s)} sec"
    return f"{int(s // 60)} min {int(s % 60)} sec"


def expand(text: str, env: dict[str, str]) -> str:
    """hudson.Util.replaceMacro: $VAR and ${VAR} of known variables; unknown ones stay as they are."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, m.group(0))
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", sub, text)


# ------------------------------------------------------------------------------------------ config
@dataclass
class ParamDef:
    kind: str  # StringParameterDefinition, ChoiceParameterDefinition, ...
    name: str
    default: str
    description: str = ""
    choices: list[str] = field(default_factory=list)

    @property
    def value_class(self) -> str:
        return {"BooleanParameterDefinition": "hudson.model.BooleanParameterValue",
                "TextParameterDefinition": "hudson.model.TextParameterValue",
                "PasswordParameterDefinition": "hudson.model.PasswordParameterValue"}.get(
            self.kind, "hudson.model.StringParameterValue")

    def value(self, raw: str | None) -> str:
        """ParameterDefinition.createValue: the default when absent; a choice must be one of them."""
        if raw is None:
            return self.default
        if self.kind == "BooleanParameterDefinition":
            return "true" if raw.strip().lower() == "true" else "false"
        if self.kind == "ChoiceParameterDefinition" and raw not in self.choices:
            raise ServerError(f"java.lang.IllegalArgumentException: Illegal choice for parameter {self.name}: {raw}")
        return raw

    def api(self) -> dict[str, Any]:
        default: Any = self.default == "true" if self.kind == "BooleanParameterDefinition" else self.default
        d: dict[str, Any] = {
            "_class": "hudson.model." + self.kind,
            "defaultParameterValue": {"_class": self.value_class, "name": self.name, "value": default},
            "description": self.description, "name": self.name, "type": self.kind,
        }
        if self.kind == "ChoiceParameterDefinition":
            d["choices"] = list(self.choices)
        return d


@dataclass
class Shell:
    command: str
    unstable_return: int | None = None


@dataclass
class Binding:
    kind: str  # UsernamePasswordMultiBinding | StringBinding | UsernamePasswordBinding
    credentials_id: str
    variables: dict[str, str]  # role ("username", "password", "variable") -> env var name


@dataclass
class TriggerConfig:
    projects: list[str]
    condition: str
    current_parameters: bool = False
    predefined: str | None = None
    properties_files: list[str] = field(default_factory=list)
    fail_trigger_on_missing: bool = False
    trigger_with_no_parameters: bool = False


@dataclass
class DescriptionSetter:
    regexp: str
    description: str
    regexp_for_failed: str
    description_for_failed: str


@dataclass
class JobConfig:
    kind: str
    description: str = ""
    disabled: bool = False
    concurrent: bool = False
    quiet_period: int | None = None
    params: list[ParamDef] = field(default_factory=list)
    git_url: str | None = None
    git_branches: list[str] = field(default_factory=list)
    shells: list[Shell] = field(default_factory=list)
    bindings: list[Binding] = field(default_factory=list)
    junit: tuple[str, bool] | None = None  # (testResults glob, allowEmptyResults)
    triggers: list[TriggerConfig] = field(default_factory=list)
    description_setter: DescriptionSetter | None = None
    timer_specs: list[str] = field(default_factory=list)
    scm_poll_specs: list[str] = field(default_factory=list)
    not_emulated: list[str] = field(default_factory=list)


def _text(el: ET.Element | None, path: str, default: str = "") -> str:
    if el is None:
        return default
    found = el.find(path)
    return default if found is None or found.text is None else found.text


def _bool(el: ET.Element | None, path: str, default: bool = False) -> bool:
    return _text(el, path, str(default).lower()).strip() == "true"


def parse_config(xml_text: str | bytes) -> JobConfig:
    """Read a config.xml; Failure-free: malformed XML is a ServerError, as XMLUtils.safeTransform's is."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ServerError(f"java.io.IOException: Failed to persist config.xml: {exc}") from exc
    kind = _ROOT_TAGS.get(root.tag)
    if kind is None:
        raise ServerError(f"java.io.IOException: Unable to read config.xml: no item type for <{root.tag}>")
    cfg = JobConfig(kind=kind, description=_text(root, "description"))
    if kind == FOLDER:
        return cfg
    cfg.disabled = _bool(root, "disabled")
    cfg.concurrent = _bool(root, "concurrentBuild")
    if root.find("quietPeriod") is not None:
        cfg.quiet_period = int(_text(root, "quietPeriod", "0"))
    for prop in root.find("properties") or []:
        if prop.tag != "hudson.model.ParametersDefinitionProperty":
            continue
        for d in prop.find("parameterDefinitions") or []:
            kind_name = d.tag.rsplit(".", 1)[-1]
            pd = ParamDef(kind_name, _text(d, "name"), "", _text(d, "description"))
            if kind_name == "ChoiceParameterDefinition":
                pd.choices = [c.text or "" for c in d.iter("string")]
                pd.default = pd.choices[0] if pd.choices else ""
            elif kind_name == "BooleanParameterDefinition":
                pd.default = "true" if _bool(d, "defaultValue") else "false"
            else:
                pd.default = _text(d, "defaultValue")
            cfg.params.append(pd)
    scm = root.find("scm")
    if scm is not None and scm.get("class") == "hudson.plugins.git.GitSCM":
        cfg.git_url = _text(scm, "userRemoteConfigs/hudson.plugins.git.UserRemoteConfig/url").strip()
        cfg.git_branches = [b.text.strip() for b in scm.iterfind("branches/hudson.plugins.git.BranchSpec/name")
                            if b.text and b.text.strip()] or ["**"]
    elif scm is not None and scm.get("class") not in (None, "hudson.scm.NullSCM"):
        cfg.not_emulated.append(f"scm {scm.get('class')}")
    for trig in root.find("triggers") or []:
        if trig.tag == "hudson.triggers.TimerTrigger":
            cfg.timer_specs.append(_text(trig, "spec"))
        elif trig.tag == "hudson.triggers.SCMTrigger":
            cfg.scm_poll_specs.append(_text(trig, "spec"))
        else:
            cfg.not_emulated.append(f"trigger {trig.tag}")
    for b in root.find("builders") or []:
        if b.tag == "hudson.tasks.Shell":
            ur = _text(b, "unstableReturn").strip()
            cfg.shells.append(Shell(_text(b, "command"), int(ur) if ur else None))
        else:
            cfg.not_emulated.append(f"builder {b.tag}")
    for w in root.find("buildWrappers") or []:
        if w.tag != BINDING + "SecretBuildWrapper":
            cfg.not_emulated.append(f"wrapper {w.tag}")
            continue
        for bd in w.find("bindings") or []:
            kind_name = bd.tag.rsplit(".", 1)[-1]
            roles = {c.tag.removesuffix("Variable"): (c.text or "").strip()
                     for c in bd if c.tag.endswith(("Variable", "variable"))}
            cfg.bindings.append(Binding(kind_name, _text(bd, "credentialsId").strip(), roles))
    for p in root.find("publishers") or []:
        if p.tag == "hudson.tasks.junit.JUnitResultArchiver":
            cfg.junit = (_text(p, "testResults").strip(), _bool(p, "allowEmptyResults"))
        elif p.tag == P + "BuildTrigger":
            cfg.triggers.extend(_trigger_config(c) for c in p.iterfind(f"configs/{P}BuildTriggerConfig"))
        elif p.tag == "hudson.plugins.descriptionsetter.DescriptionSetterPublisher":
            cfg.description_setter = DescriptionSetter(
                _text(p, "regexp"), _text(p, "description"), _text(p, "regexpForFailed"),
                _text(p, "descriptionForFailed"))
        else:
            cfg.not_emulated.append(f"publisher {p.tag}")
    return cfg


def _trigger_config(c: ET.Element) -> TriggerConfig:
    t = TriggerConfig(
        projects=[p.strip() for p in _text(c, "projects").split(",") if p.strip()],
        condition=_text(c, "condition", "SUCCESS").strip(),
        trigger_with_no_parameters=_bool(c, "triggerWithNoParameters"),
    )
    for f in c.find("configs") or []:
        if f.tag == P + "CurrentBuildParameters":
            t.current_parameters = True
        elif f.tag == P + "PredefinedBuildParameters":
            t.predefined = _text(f, "properties")
        elif f.tag == P + "FileBuildParameters":
            t.properties_files = [s.strip() for s in _text(f, "propertiesFile").split(",") if s.strip()]
            t.fail_trigger_on_missing = _bool(f, "failTriggerOnMissing")
    return t


TRIGGER_CONDITIONS = {
    "SUCCESS": lambda r: r == "SUCCESS",
    "UNSTABLE": lambda r: r == "UNSTABLE",
    "UNSTABLE_OR_BETTER": lambda r: RESULT_ORDER[r] <= RESULT_ORDER["UNSTABLE"],
    "UNSTABLE_OR_WORSE": lambda r: RESULT_ORDER[r] >= RESULT_ORDER["UNSTABLE"],
    "FAILED": lambda r: r == "FAILURE",
    "FAILED_OR_BETTER": lambda r: RESULT_ORDER[r] <= RESULT_ORDER["FAILURE"],
    "ALWAYS": lambda r: True,
}


def parse_properties(text: str) -> dict[str, str]:
    """java.util.Properties.load, the parts job parameters use: key=value / key: value, # comments."""
    out: dict[str, str] = {}
    for line in text.replace("\\\n", "").splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        m = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
        else:
            out[line] = ""
    return out


# -------------------------------------------------------------------------------------------- state
@dataclass
class Item:
    full_name: str
    config_xml: str
    config: JobConfig
    next_build_number: int = 1
    builds: dict[int, Build] = field(default_factory=dict)
    children: dict[str, Item] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.full_name.rsplit("/", 1)[-1]

    @property
    def parent_name(self) -> str:
        return self.full_name.rsplit("/", 1)[0] if "/" in self.full_name else ""

    @property
    def is_folder(self) -> bool:
        return self.config.kind == FOLDER

    def running(self) -> list[Build]:
        return [b for b in self.builds.values() if b.building]

    def color(self) -> str:
        """Job.getIconColor: the last completed build's colour, "_anime" while one runs."""
        if self.config.disabled:
            return "disabled"
        done = [b for b in self.builds.values() if not b.building]
        base = COLORS[done[-1].result or "NOT_BUILT"] if done else "notbuilt"
        return base + "_anime" if self.running() else base


@dataclass
class Build:
    job: str
    number: int
    queue_id: int
    params: list[tuple[str, str, str]]  # (name, value, value class)
    causes: list[dict[str, Any]]
    executor: int
    workspace_suffix: str = ""
    timestamp: int = field(default_factory=lambda: int(time.time() * 1000))
    duration: int = 0
    result: str | None = None
    building: bool = True
    description: str | None = None
    console: bytearray = field(default_factory=bytearray)
    actions: list[dict[str, Any]] = field(default_factory=list)
    test_report: dict[str, Any] | None = None
    env: dict[str, str] = field(default_factory=dict)
    abort_by: str | None = None

    @property
    def param_dict(self) -> dict[str, str]:
        return {n: v for n, v, _ in self.params}


@dataclass
class QueueItem:
    id: int
    job: str
    params: list[tuple[str, str, str]]
    causes: list[dict[str, Any]]
    not_before: float  # monotonic
    in_queue_since: int = field(default_factory=lambda: int(time.time() * 1000))
    state: str = "waiting"  # waiting | blocked | buildable | left
    why: str | None = None
    executable: tuple[str, int] | None = None
    cancelled: bool = False

    def why_now(self, now: float) -> str | None:
        """`why` as Jenkins gives it when asked. A waiting item's cause is computed from its timestamp
        at each request (WaitingItem.getCauseOfBlockage): the quiet period left, or "Finished waiting"
        once it is over and Queue.maintain has not yet moved the item on. So a new item has a `why`
        from the first read, not only after the next maintain. Other states keep what maintain said."""
        if self.state != "waiting":
            return self.why
        left = self.not_before - now
        return f"In the quiet period. Expires in {timespan(left * 1000)}" if left >= 0 else "Finished waiting"


class JenkinsState:
    """Items, builds and the queue, with Jenkins' rules for creating, scheduling and blocking."""

    def __init__(self, executors: int = 2, quiet_period: int = 0):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.root: dict[str, Item] = {}
        self.queue: list[QueueItem] = []
        self.left: dict[int, QueueItem] = {}
        self.executors = executors
        self.quiet_period = quiet_period
        self._next_queue_id = 1

    # ---- items
    def children_of(self, parent: str) -> dict[str, Item]:
        if not parent:
            return self.root
        folder = self.get(parent)
        if folder is None or not folder.is_folder:
            raise NotFound(parent)
        return folder.children

    def get(self, full_name: str) -> Item | None:
        items, item = self.root, None
        for part in full_name.strip("/").split("/"):
            item = items.get(part)
            if item is None:
                return None
            items = item.children
        return item

    def all_items(self) -> list[Item]:
        out: list[Item] = []
        stack = list(self.root.values())
        while stack:
            it = stack.pop(0)
            out.append(it)
            stack[:0] = list(it.children.values())
        return out

    def create(self, parent: str, name: str, config_xml: str) -> Item:
        """ItemGroupMixIn.createProjectFromXML (or createProject for a mode)."""
        check_good_name(name)
        name = name.strip()
        siblings = self.children_of(parent)
        if name in siblings:
            raise Failure(f"A job already exists with the name \u2018{name}\u2019")
        config = parse_config(config_xml)
        item = Item(f"{parent}/{name}" if parent else name, config_xml, config)
        siblings[name] = item
        return item

    def update(self, item: Item, config_xml: str) -> None:
        """AbstractItem.updateByXml: same item type, else an IOException (500)."""
        try:
            config = parse_config(config_xml)
        except ServerError as exc:
            raise ServerError(str(exc).replace("persist", "process")) from exc
        if config.kind != item.config.kind:
            raise ServerError(f"java.io.IOException: Expecting class {item.config.kind} but got "
                              f"class {config.kind} instead")
        item.config_xml, item.config = config_xml, config

    def delete(self, item: Item) -> None:
        self.children_of(item.parent_name).pop(item.name, None)
        gone = {i.full_name for i in [item, *self._descendants(item)]}
        for q in [q for q in self.queue if q.job in gone]:
            self.cancel(q)

    def _descendants(self, item: Item) -> list[Item]:
        out = []
        for c in item.children.values():
            out += [c, *self._descendants(c)]
        return out

    # ---- queue
    def schedule(self, job: Item, params: list[tuple[str, str, str]], causes: list[dict[str, Any]],
                 delay: float | None) -> tuple[QueueItem, bool]:
        """Queue.schedule2: a waiting item of the same job with the same parameters absorbs the new one."""
        for q in self.queue:
            if q.job == job.full_name and q.params == params:
                q.causes.extend(c for c in causes if c not in q.causes)
                return q, False
        if delay is None:
            delay = job.config.quiet_period if job.config.quiet_period is not None else self.quiet_period
        item = QueueItem(self._next_queue_id, job.full_name, params, causes, time.monotonic() + delay)
        self._next_queue_id += 1
        self.queue.append(item)
        self.changed.notify_all()
        return item, True

    def cancel(self, item: QueueItem) -> None:
        self.queue.remove(item)
        item.state, item.cancelled, item.why = "left", True, None
        self.left[item.id] = item

    def queue_item(self, number: int) -> QueueItem | None:
        return next((q for q in self.queue if q.id == number), None) or self.left.get(number)

    def busy_executors(self) -> set[int]:
        return {b.executor for it in self.all_items() for b in it.running()}

    def dispatch(self, now: float) -> list[Build]:
        """One Queue.maintain(): start what may start, and say why the others wait."""
        started: list[Build] = []
        busy = self.busy_executors()
        for q in list(self.queue):
            job = self.get(q.job)
            if job is None:
                self.cancel(q)
                continue
            running = job.running()
            if now < q.not_before:
                q.state, q.why = "waiting", f"In the quiet period. Expires in {timespan((q.not_before - now) * 1000)}"
            elif running and not job.config.concurrent:
                q.state, q.why = "blocked", f"Build #{running[-1].number} is already in progress{self._eta(job)}"
            elif len(busy) >= self.executors:
                q.state, q.why = "buildable", "Waiting for next available executor"
            else:
                executor = min(set(range(self.executors)) - busy)
                busy.add(executor)
                number = job.next_build_number
                job.next_build_number += 1
                build = Build(job.full_name, number, q.id, q.params, q.causes, executor,
                              workspace_suffix=f"@{len(running) + 1}" if running else "")
                job.builds[number] = build
                self.queue.remove(q)
                q.state, q.why, q.executable = "left", None, (job.full_name, number)
                self.left[q.id] = q
                started.append(build)
        return started

    def _eta(self, job: Item) -> str:
        done = [b.duration for b in job.builds.values() if b.result == "SUCCESS"]
        if not done:
            return " (ETA: N/A)"
        running = job.running()[-1]
        return f" (ETA: {timespan(done[-1] - (time.time() * 1000 - running.timestamp))})"
