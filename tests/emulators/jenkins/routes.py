"""The Jenkins emulator's HTTP side: the filter chain (basic auth, CSRF crumb, permissions) and a route table.

Filters run in Jenkins' order: BasicHeaderProcessor (a wrong user/token or password is 401 with
``WWW-Authenticate: Basic realm="Jenkins"``), CrumbFilter (a POST needs the crumb issued to the same
user and session, unless authenticated by API token: ApiCrumbExclusion), then Stapler, where an
anonymous request without Overall/Read is 403 "Authentication required". Routes below map an
object (the root or a folder, a job, a build) and a method to one handler.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from .model import FOLDER, FREESTYLE, Build, Failure, Item, NotFound, QueueItem, ServerError

if TYPE_CHECKING:
    from . import JenkinsEmulator

CRUMB_FIELD = "Jenkins-Crumb"
PERMALINKS = {
    "lastBuild": lambda b: True,
    "lastCompletedBuild": lambda b: not b.building,
    "lastSuccessfulBuild": lambda b: b.result in ("SUCCESS", "UNSTABLE"),
    "lastStableBuild": lambda b: b.result == "SUCCESS",
    "lastFailedBuild": lambda b: b.result == "FAILURE",
    "lastUnstableBuild": lambda b: b.result == "UNSTABLE",
    "lastUnsuccessfulBuild": lambda b: not b.building and b.result != "SUCCESS",
}
QUEUE_CLASSES = {"waiting": "hudson.model.Queue$WaitingItem", "blocked": "hudson.model.Queue$BlockedItem",
                 "buildable": "hudson.model.Queue$BuildableItem", "left": "hudson.model.Queue$LeftItem"}


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    form: dict[str, list[str]] = field(default_factory=dict)
    user: str | None = None
    by_token: bool = False
    session: str | None = None
    set_cookie: str | None = None

    def param(self, name: str, default: str | None = None) -> str | None:
        """ServletRequest.getParameter: the query string's value first, then the form body's."""
        values = self.query.get(name) or self.form.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int = 200
    body: bytes | str | Any = b""
    content_type: str = "text/html;charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def _page(title: str) -> Response:
    return Response(200, f"<!DOCTYPE html><html><head><title>{title} [Jenkins]</title></head><body></body></html>")


def _redirect(location: str, status: int = 302) -> Response:
    return Response(status, b"", headers={"Location": location})


# ------------------------------------------------------------------------------------ tree filter
def parse_tree(spec: str) -> dict[str, Any]:
    """?tree=jobs[name,url,jobs[name]],builds[number]{0,5}"""
    pos = 0

    def items() -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(spec):
            m = re.match(r"\s*([^\[\]{},\s]+)\s*", spec[pos:])
            if not m:
                break
            pos += m.end()
            sub, rng = None, None
            if pos < len(spec) and spec[pos] == "[":
                pos += 1
                sub = items()
                pos += 1  # ]
            if pos < len(spec) and spec[pos] == "{":
                end = spec.index("}", pos)
                lo, _, hi = spec[pos + 1:end].partition(",")
                rng = (int(lo or 0), int(hi) if hi else None) if "," in spec[pos + 1:end] else (int(lo), int(lo) + 1)
                pos = end + 1
            out[m.group(1)] = (sub, rng)
            if pos < len(spec) and spec[pos] == ",":
                pos += 1
                continue
            break
        return out
    return items()


def apply_tree(value: Any, tree: dict[str, Any] | None) -> Any:
    if isinstance(value, list):
        return [apply_tree(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    out = {"_class": value["_class"]} if "_class" in value else {}
    for key, (sub, rng) in (tree or {}).items():
        if key in value:
            v = value[key]
            if rng is not None and isinstance(v, list):
                v = v[rng[0]:rng[1]]
            out[key] = apply_tree(v, sub)
    return out


# ----------------------------------------------------------------------------------------- routes
Handler = Callable[..., Response]


class Routes:
    """Everything the HTTP server answers, as (scope, method, tail regex) -> handler."""

    def __init__(self, emulator: JenkinsEmulator):
        self.emu = emulator
        self.state = emulator.state
        self.salt = secrets.token_hex(8)
        self.node_id = secrets.token_hex(4)
        self.session_hash = secrets.token_hex(4)
        self.sessions: set[str] = set()
        self._lock = threading.Lock()
        self.table: list[tuple[str, str, re.Pattern[str], Handler, str]] = []
        for scope, method, pattern, handler, perm in [
            ("root", "GET", r"", self.root_page, "read"),
            ("root", "GET", r"api/json", self.root_api, "read"),
            ("root", "GET", r"crumbIssuer/api/json", self.crumb, "read"),
            ("root", "GET", r"me/api/json", self.me, "read"),
            ("root", "GET", r"whoAmI/api/json", self.who_am_i, "none"),
            ("root", "GET", r"queue/api/json", self.queue_api, "read"),
            ("root", "GET", r"queue/item/(\d+)/api/json", self.queue_item_api, "read"),
            ("root", "GET", r"queue/item/(\d+)", self.queue_item_page, "read"),
            ("root", "POST", r"queue/cancelItem", self.cancel_item, "write"),
            ("root", "POST", r"createItem", self.create_item, "write"),
            ("folder", "GET", r"", self.item_page, "read"),
            ("folder", "GET", r"api/json", self.folder_api, "read"),
            ("folder", "POST", r"createItem", self.create_item, "write"),
            ("item", "GET", r"config\.xml", self.get_config, "read"),
            ("item", "POST", r"config\.xml", self.post_config, "write"),
            ("item", "GET", r"configure", self.item_page, "read"),
            ("item", "POST", r"doDelete", self.delete_item, "write"),
            ("job", "GET", r"", self.item_page, "read"),
            ("job", "GET", r"api/json", self.job_api, "read"),
            ("job", "POST", r"build", self.build, "write"),
            ("job", "POST", r"buildWithParameters", self.build_with_parameters, "write"),
            ("job", "POST", r"(enable|disable)", self.enable_disable, "write"),
            ("build", "GET", r"", self.build_page, "read"),
            ("build", "GET", r"api/json", self.build_api, "read"),
            ("build", "GET", r"consoleText", self.console_text, "read"),
            ("build", "GET", r"logText/progressiveText", self.progressive_text, "read"),
            ("build", "GET", r"testReport/api/json", self.test_report, "read"),
            ("build", "POST", r"stop", self.stop, "write"),
            ("build", "POST", r"doDelete", self.delete_build, "write"),
            ("build", "POST", r"submitDescription", self.submit_description, "write"),
        ]:
            self.table.append((scope, method, re.compile(pattern + r"/?"), handler, perm))

    # ---------------------------------------------------------------------------- filter chain
    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        req = Request(method, parsed.path, urllib.parse.parse_qs(parsed.query, keep_blank_values=True),
                      h.headers, h.rfile.read(length) if length > 0 else b"")
        if (h.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            req.form = urllib.parse.parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True)
        try:
            self.authenticate(req)
            self.session(req, create=False)
            if method == "POST" and not req.by_token:
                self.check_crumb(req)
            rsp = self.dispatch(req)
        except HttpError as exc:
            rsp = Response(exc.status, f"<html><body><h2>HTTP ERROR {exc.status} {exc.message}</h2></body></html>",
                           headers=exc.headers)
        except Failure as exc:
            rsp = Response(400, f"<html><body><h1>Error</h1><p>{exc}</p></body></html>",
                           headers={"X-Error": str(exc)})
        except NotFound:
            rsp = Response(404, "<html><body><h2>HTTP ERROR 404 Not Found</h2></body></html>")
        except ServerError as exc:
            rsp = Response(500, f"<html><body><h1>Oops!</h1><pre>{exc}</pre></body></html>")
        if req.set_cookie:
            rsp.headers["Set-Cookie"] = req.set_cookie
        self.send(h, rsp)

    def authenticate(self, req: Request) -> None:
        """BasicHeaderProcessor: API token or password; wrong credentials are 401, never anonymous."""
        header = req.headers.get("Authorization") or ""
        if not header.lower().startswith("basic "):
            return
        try:
            user, _, secret = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except ValueError:
            user, secret = "", ""
        if secret and self.emu.users.get(user) == secret:
            req.user, req.by_token = user, True
        elif secret and self.emu.passwords.get(user) == secret:
            req.user = user
        else:
            raise HttpError(401, f"Invalid password/token for user: {user}",
                            {"WWW-Authenticate": 'Basic realm="Jenkins"'})

    def session(self, req: Request, create: bool) -> str | None:
        """Jetty's session: cookie JSESSIONID.<node>; created on demand (the crumb issuer wants one)."""
        cookie_name = f"JSESSIONID.{self.node_id}"
        for part in (req.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == cookie_name and value in self.sessions:
                req.session = value
        if req.session is None and create:
            req.session = secrets.token_urlsafe(18)
            with self._lock:
                self.sessions.add(req.session)
            req.set_cookie = f"{cookie_name}={req.session}; Path=/; HttpOnly"
        return req.session

    def issue_crumb(self, user: str | None, session: str | None) -> str:
        """DefaultCrumbIssuer.issueCrumb: a digest of user name, session id and the salt."""
        return hashlib.sha256(f"{user or 'anonymous'};{session};{self.salt}".encode()).hexdigest()

    def check_crumb(self, req: Request) -> None:
        crumb = req.headers.get(CRUMB_FIELD) or req.param(CRUMB_FIELD)
        if crumb is None or req.session is None or crumb != self.issue_crumb(req.user, req.session):
            raise HttpError(403, "No valid crumb was included in the request")

    def permit(self, req: Request, perm: str) -> None:
        if req.user is not None or perm == "none" or (perm == "read" and self.emu.anonymous_read):
            return
        raise HttpError(403, "Authentication required", {
            "X-You-Are-Authenticated-As": "anonymous",
            "X-Required-Permission": "hudson.model.Hudson.Read" if perm == "read" else "hudson.model.Item.Build",
        })

    def dispatch(self, req: Request) -> Response:
        segments = [urllib.parse.unquote(s) for s in req.path.strip("/").split("/")] if req.path.strip("/") else []
        with self.state.lock:
            item: Item | None = None
            while len(segments) >= 2 and segments[0] == "job":
                children = item.children if item is not None else self.state.root
                item = children.get(segments[1])
                if item is None:
                    self.permit(req, "read")
                    raise NotFound(req.path)
                segments = segments[2:]
            build: Build | None = None
            scopes = ["root"] if item is None else ["folder", "item"] if item.is_folder else ["job", "item"]
            if item is not None and not item.is_folder and segments and (
                    segments[0].isdigit() or segments[0] in PERMALINKS):
                build = self._find_build(item, segments[0])
                if build is None:
                    self.permit(req, "read")
                    raise NotFound(req.path)
                scopes, segments = ["build"], segments[1:]
            tail = "/".join(segments)
            allowed = False
            for scope, method, pattern, handler, perm in self.table:
                m = pattern.fullmatch(tail)
                if scope in scopes and m:
                    if method != req.method and not (method == "GET" and req.method == "HEAD"):
                        allowed = True
                        continue
                    self.permit(req, perm)
                    args = [a for a in (item, build) if a is not None]
                    return handler(req, *args, *m.groups())
        self.permit(req, "read")
        if allowed:
            raise HttpError(405, "Method Not Allowed")
        raise NotFound(req.path)

    def send(self, h: BaseHTTPRequestHandler, rsp: Response) -> None:
        body = rsp.body
        if not isinstance(body, bytes | str):
            body, rsp.content_type = json.dumps(body), "application/json;charset=utf-8"
        data = body.encode("utf-8") if isinstance(body, str) else body
        h.send_response(rsp.status)
        headers = {"X-Content-Type-Options": "nosniff", "X-Jenkins": self.emu.version,
                   "X-Jenkins-Session": self.session_hash, "Content-Type": rsp.content_type,
                   "Content-Length": str(len(data)), **rsp.headers}
        for k, v in headers.items():
            # Jetty writes header values as ISO-8859-1: what does not fit becomes '?'
            h.send_header(k, v.encode("latin-1", "replace").decode("latin-1"))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    # ------------------------------------------------------------------------------- renderers
    def item_url(self, item: Item | str) -> str:
        name = item.full_name if isinstance(item, Item) else item
        return self.emu.url + "/" + "".join(f"job/{urllib.parse.quote(p)}/" for p in name.split("/"))

    def build_url(self, b: Build) -> str:
        return f"{self.item_url(b.job)}{b.number}/"

    def build_ref(self, b: Build | None) -> dict[str, Any] | None:
        return None if b is None else {"_class": "hudson.model.FreeStyleBuild", "number": b.number,
                                       "url": self.build_url(b)}

    def item_ref(self, item: Item) -> dict[str, Any]:
        ref = {"_class": item.config.kind, "name": item.name, "url": self.item_url(item)}
        if not item.is_folder:
            ref["color"] = item.color()
        return ref

    def _find_build(self, job: Item, key: str) -> Build | None:
        if key.isdigit():
            return job.builds.get(int(key))
        match = PERMALINKS[key]
        return next((b for _, b in sorted(job.builds.items(), reverse=True) if match(b)), None)

    def _json(self, req: Request, data: dict[str, Any]) -> Response:
        tree = req.param("tree")
        return Response(200, apply_tree(data, parse_tree(tree)) if tree else data)

    def _params_action(self, params: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        if not params:
            return []
        return [{"_class": "hudson.model.ParametersAction", "parameters": [
            {"_class": cls, "name": n, "value": (v == "true") if cls.endswith("BooleanParameterValue") else v}
            for n, v, cls in params]}]

    def queue_json(self, q: QueueItem) -> dict[str, Any]:
        job = self.state.get(q.job)
        d: dict[str, Any] = {
            "_class": QUEUE_CLASSES[q.state],
            "actions": [*self._params_action(q.params), {"_class": "hudson.model.CauseAction", "causes": q.causes}],
            "blocked": q.state == "blocked", "buildable": q.state == "buildable", "id": q.id,
            "inQueueSince": q.in_queue_since, "params": "".join(f"\n{n}={v}" for n, v, _ in q.params),
            "stuck": False, "url": f"queue/item/{q.id}/", "why": q.why_now(time.monotonic()),
            "task": {"_class": FREESTYLE, "name": q.job.rsplit("/", 1)[-1], "url": self.item_url(q.job),
                     **({"color": job.color()} if job else {})},
        }
        if q.state == "left":
            executable = None
            if q.executable is not None:
                owner = self.state.get(q.executable[0])
                b = owner.builds.get(q.executable[1]) if owner else None
                executable = self.build_ref(b)
            d.update(cancelled=q.cancelled, executable=executable)
        elif q.state == "buildable":
            d["pending"] = False
        return d

    # ---------------------------------------------------------------------------------- root
    def root_page(self, req: Request) -> Response:
        return _page("Dashboard")

    def root_api(self, req: Request) -> Response:
        all_view = {"_class": "hudson.model.AllView", "name": "all", "url": self.emu.url + "/"}
        return self._json(req, {
            "_class": "hudson.model.Hudson", "assignedLabels": [{"name": "built-in"}], "mode": "NORMAL",
            "nodeDescription": "the Jenkins controller's built-in node", "nodeName": "",
            "numExecutors": self.state.executors, "description": None,
            "jobs": [self.folder_tree(i) for i in self.state.root.values()],
            "primaryView": all_view, "quietingDown": False, "slaveAgentPort": -1, "url": self.emu.url + "/",
            "useCrumbs": True, "useSecurity": True, "views": [all_view],
        })

    def folder_tree(self, item: Item) -> dict[str, Any]:
        ref = self.item_ref(item)
        if item.is_folder:
            ref["jobs"] = [self.folder_tree(c) for c in item.children.values()]
        return ref

    def crumb(self, req: Request) -> Response:
        session = self.session(req, create=True)
        return self._json(req, {"_class": "hudson.security.csrf.DefaultCrumbIssuer",
                                "crumb": self.issue_crumb(req.user, session), "crumbRequestField": CRUMB_FIELD})

    def me(self, req: Request) -> Response:
        if req.user is None:
            raise HttpError(403, "anonymous is missing the Overall/Read permission")
        return self._json(req, {"_class": "hudson.model.User", "absoluteUrl": f"{self.emu.url}/user/{req.user}",
                                "description": None, "fullName": req.user, "id": req.user, "property": []})

    def who_am_i(self, req: Request) -> Response:
        anonymous = req.user is None
        return self._json(req, {"_class": "hudson.security.WhoAmI", "anonymous": anonymous,
                                "authenticated": not anonymous, "name": req.user or "anonymous",
                                "authorities": ["anonymous"] if anonymous else ["authenticated"]})

    def queue_api(self, req: Request) -> Response:
        return self._json(req, {"_class": "hudson.model.Queue", "discoverableItems": [],
                                "items": [self.queue_json(q) for q in self.state.queue]})

    def queue_item_api(self, req: Request, number: str) -> Response:
        q = self.state.queue_item(int(number))
        if q is None:
            raise NotFound(number)
        return self._json(req, self.queue_json(q))

    def queue_item_page(self, req: Request, number: str) -> Response:
        if self.state.queue_item(int(number)) is None:
            raise NotFound(number)
        return _page(f"Queue item {number}")

    def cancel_item(self, req: Request) -> Response:
        """Queue.doCancelItem: 204, or 404 "Provided id (N) not found" once it has left the queue."""
        number = int(req.param("id") or 0)
        q = next((q for q in self.state.queue if q.id == number), None)
        if q is None:
            raise HttpError(404, f"Provided id ({number}) not found")
        self.state.cancel(q)
        return Response(204, b"")

    # -------------------------------------------------------------------------------- folders
    def create_item(self, req: Request, folder: Item | None = None) -> Response:
        """ItemGroupMixIn.createTopLevelItem: XML body, or an empty item of a ?mode=."""
        parent = folder.full_name if folder else ""
        content_type = req.headers.get("Content-Type")
        mode = req.param("mode")
        if content_type is None and mode != "copy":
            raise Failure("No Content-Type header set")
        name = req.param("name")
        if name is None:
            raise Failure("Query parameter 'name' is required")
        if content_type and content_type.startswith(("application/xml", "text/xml")):
            self.state.create(parent, name, req.body.decode("utf-8", "replace"))
            return Response(200, b"")
        if mode is None:
            raise Failure("No mode given")
        if mode == "copy":
            source = self.emu.resolve_relative(req.param("from") or "", folder)
            if source is None:
                raise Failure(f"No such job: {req.param('from')}")
            item = self.state.create(parent, name, source.config_xml)
        elif mode in (FOLDER, FREESTYLE):
            empty = ("<project><builders/><publishers/><buildWrappers/></project>" if mode == FREESTYLE
                     else f"<{FOLDER}><description/></{FOLDER}>")
            item = self.state.create(parent, name, "<?xml version='1.1' encoding='UTF-8'?>\n" + empty)
        else:
            raise Failure(f"No item type \u2018{mode}\u2019 is known")
        return _redirect(self.item_url(item) + "configure")

    def folder_api(self, req: Request, folder: Item) -> Response:
        return self._json(req, {
            **self.item_ref(folder), "actions": [], "description": folder.config.description,
            "displayName": folder.name, "fullDisplayName": folder.full_name.replace("/", " » "),
            "fullName": folder.full_name, "jobs": [self.item_ref(c) for c in folder.children.values()],
            "primaryView": {"_class": "hudson.model.AllView", "name": "All", "url": self.item_url(folder)},
        })

    def item_page(self, req: Request, item: Item) -> Response:
        return _page(item.full_name)

    def get_config(self, req: Request, item: Item) -> Response:
        """XmlFile writes XML 1.1 with a single-quoted declaration."""
        text = re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", item.config_xml)
        return Response(200, "<?xml version='1.1' encoding='UTF-8'?>\n" + text, "application/xml")

    def post_config(self, req: Request, item: Item) -> Response:
        self.state.update(item, req.body.decode("utf-8", "replace"))
        return Response(200, b"")

    def delete_item(self, req: Request, item: Item) -> Response:
        """AbstractItem.doDoDelete: running builds are aborted, then 302 to the parent."""
        for it in [item, *item.children.values()]:
            for b in it.running():
                self.emu.runner.abort(b, req.user or "anonymous")
        self.state.delete(item)
        parent = self.state.get(item.parent_name) if item.parent_name else None
        return _redirect(self.item_url(parent) if parent else self.emu.url + "/")

    # ------------------------------------------------------------------------------------ jobs
    def job_api(self, req: Request, job: Item) -> Response:
        builds = [b for _, b in sorted(job.builds.items(), reverse=True)]
        params = [p.api() for p in job.config.params]
        prop = ([{"_class": "hudson.model.ParametersDefinitionProperty", "parameterDefinitions": params}]
                if params else [])
        queued = next((q for q in self.state.queue if q.job == job.full_name), None)

        def last(key: str) -> dict[str, Any] | None:
            return self.build_ref(self._find_build(job, key))
        return self._json(req, {
            **self.item_ref(job), "actions": [*prop, {"_class": "hudson.model.ViewJobAction"}],
            "description": job.config.description, "displayName": job.name, "displayNameOrNull": None,
            "fullDisplayName": job.full_name.replace("/", " » "), "fullName": job.full_name,
            "buildable": not job.config.disabled, "builds": [self.build_ref(b) for b in builds[:100]],
            "firstBuild": self.build_ref(builds[-1] if builds else None), "healthReport": [],
            "inQueue": queued is not None, "keepDependencies": False,
            **{k: last(k) for k in PERMALINKS},
            "nextBuildNumber": job.next_build_number, "property": prop,
            "queueItem": self.queue_json(queued) if queued else None,
            "concurrentBuild": job.config.concurrent, "disabled": job.config.disabled,
            "downstreamProjects": [self.item_ref(t) for cfg in job.config.triggers for p in cfg.projects
                                   if (t := self.emu.resolve_relative(p, job)) is not None],
            "labelExpression": None, "scm": {"_class": "hudson.plugins.git.GitSCM" if job.config.git_url
                                             else "hudson.scm.NullSCM"},
            "upstreamProjects": [],
        })

    def _schedule(self, req: Request, job: Item, raw: dict[str, str] | None, see_other: bool = False) -> Response:
        """Queue.schedule2 behind doBuild (always 201) / buildWithParameters (303 to an absorbing item)."""
        if job.config.disabled:
            raise HttpError(409, f"{job.full_name} is not buildable")
        delay = _seconds(req.param("delay"))
        cause = ({"_class": "hudson.model.Cause$UserIdCause", "shortDescription": f"Started by user {req.user}",
                  "userId": req.user, "userName": req.user} if req.user else
                 {"_class": "hudson.model.Cause$RemoteCause", "shortDescription": "Started by remote host",
                  "addr": "127.0.0.1", "note": None})
        q, created = self.emu.schedule(job, raw, [cause], delay)
        return _redirect(f"{self.emu.url}/queue/item/{q.id}/", 303 if see_other and not created else 201)

    def build(self, req: Request, job: Item) -> Response:
        """ParameterizedJobMixIn.doBuild; a parameterized job wants the form's json here."""
        if job.config.params and not job.config.disabled:
            form = req.param("json")
            if form is None:
                raise HttpError(400, f"This page expects a form submission but had only {dict(req.form)}")
            values = json.loads(form).get("parameter", [])
            values = values if isinstance(values, list) else [values]
            return self._schedule(req, job, {v["name"]: str(v.get("value", "")) for v in values})
        return self._schedule(req, job, None)

    def build_with_parameters(self, req: Request, job: Item) -> Response:
        if job.config.disabled:
            raise HttpError(409, f"{job.full_name} is not buildable")
        if not job.config.params:
            raise HttpError(400, f"{job.full_name} is not parameterized")
        raw = {p.name: v for p in job.config.params if (v := req.param(p.name)) is not None}
        return self._schedule(req, job, raw, see_other=True)

    def enable_disable(self, req: Request, job: Item, what: str) -> Response:
        disabled = what == "disable"
        xml = job.config_xml
        if "<disabled>" in xml:
            xml = re.sub(r"<disabled>\s*\w*\s*</disabled>", f"<disabled>{str(disabled).lower()}</disabled>", xml)
        else:
            xml = re.sub(r"(<project[^>]*>)", rf"\1<disabled>{str(disabled).lower()}</disabled>", xml, count=1)
        self.state.update(job, xml)
        return _redirect(self.item_url(job))

    # ---------------------------------------------------------------------------------- builds
    def build_page(self, req: Request, job: Item, build: Build) -> Response:
        return _page(f"{job.full_name} #{build.number}")

    def build_api(self, req: Request, job: Item, build: Build) -> Response:
        causes = {"_class": "hudson.model.CauseAction", "causes": build.causes}
        return self._json(req, {
            "_class": "hudson.model.FreeStyleBuild",
            "actions": [*self._params_action(build.params), causes, *build.actions],
            "artifacts": [], "building": build.building, "description": build.description,
            "displayName": f"#{build.number}", "duration": build.duration, "estimatedDuration": -1,
            "executor": {"_class": "hudson.model.Executor"} if build.building else None,
            "fullDisplayName": f"{job.full_name.replace('/', ' » ')} #{build.number}", "id": str(build.number),
            "keepLog": False, "number": build.number, "queueId": build.queue_id, "result": build.result,
            "timestamp": build.timestamp, "url": self.build_url(build), "builtOn": "",
            "changeSet": {"_class": "hudson.scm.EmptyChangeLogSet", "items": [], "kind": None}, "culprits": [],
        })

    def console_text(self, req: Request, job: Item, build: Build) -> Response:
        return Response(200, bytes(build.console), "text/plain;charset=utf-8")

    def progressive_text(self, req: Request, job: Item, build: Build) -> Response:
        """AnnotatedLargeText.doProgressiveText: bytes from ?start=, X-Text-Size, X-More-Data while running."""
        start = int(req.param("start") or 0)
        data = bytes(build.console)
        headers = {"X-Text-Size": str(len(data))}
        if build.building:
            headers["X-More-Data"] = "true"
        return Response(200, data[start:], "text/plain;charset=utf-8", headers)

    def test_report(self, req: Request, job: Item, build: Build) -> Response:
        if build.test_report is None:
            raise NotFound("testReport")
        return self._json(req, build.test_report)

    def stop(self, req: Request, job: Item, build: Build) -> Response:
        self.emu.runner.abort(build, req.user or "anonymous")
        return _redirect(self.build_url(build))

    def delete_build(self, req: Request, job: Item, build: Build) -> Response:
        if build.building:
            raise ServerError(f"java.io.IOException: Unable to delete {job.full_name} #{build.number} "
                              "because it is still running")
        job.builds.pop(build.number, None)
        return _redirect(self.item_url(job))

    def submit_description(self, req: Request, job: Item, build: Build) -> Response:
        """Run.doSubmitDescription: sets the description, 302 back to the build."""
        build.description = req.param("description") or ""
        return _redirect(self.build_url(build))


def _seconds(delay: str | None) -> float | None:
    """Stapler's TimeDuration: 5, 5sec, 500ms, 1min."""
    if delay is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)?\s*", delay)
    if not m:
        raise Failure(f"Invalid time duration value: {delay}")
    value, unit = float(m.group(1)), (m.group(2) or "s")
    if unit.startswith(("ms", "milli")):
        return value / 1000
    return value * 60 if unit.startswith("m") else value


# ----------------------------------------------------------------------------------------- server
class RequestHandler(BaseHTTPRequestHandler):
    routes: Routes
    protocol_version = "HTTP/1.1"
    server_version = "Jetty(10.0.20)"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.routes.handle(self, "GET")

    def do_POST(self) -> None:
        self.routes.handle(self, "POST")

    def do_HEAD(self) -> None:
        self.routes.handle(self, "GET")

    def do_PUT(self) -> None:
        self.routes.handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.routes.handle(self, "DELETE")
