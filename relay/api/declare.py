"""REST surfaces declared once: routes, body validation and the OpenAPI 3.1 document.

A :class:`Surface` is one vendor's route group (its mount path, its auth scheme,
its guard); each :class:`Operation` names its method, path, parameters, request
body and answers by status, with ``msgspec.Struct`` types. From the same
declarations:

* :meth:`Surface.routes` builds the Starlette routes: the guard runs first, the
  body is read with a size cap *while it streams* (413 as soon as it passes
  ``body_limit``, nothing more buffered) and decoded into the operation's
  ``body`` type; a ``msgspec.ValidationError`` becomes the API's error shape
  (:func:`invalid`): ``missing_field`` / ``invalid_field`` / ``unknown_field``
  with ``field`` as a dotted path (``agent.id``, ``metadata.a``);
* :func:`openapi` writes the document: ``components.schemas`` from the same
  Structs (``msgspec.json.schema_components``: JSON Schema 2020-12, what
  OpenAPI 3.1 uses), one security scheme per surface, every operation with its
  parameters, body and answers, error bodies included.

Handlers take ``(request, body)`` (``body`` is ``None`` without a declared body
type) and return a ``Response`` (see :func:`reply` for Structs).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._http import ApiError, ErrorBody

__all__ = ["Operation", "Param", "Security", "Surface", "decode", "invalid", "openapi", "read_body", "reply"]

T = TypeVar("T")
Handler = Callable[[Request, Any], Awaitable[Response]]
Guard = Callable[[Request], None]
Wrap = Callable[[Handler], Handler]


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter: its name and a JSON Schema for its value."""

    name: str
    where: Literal["path", "query", "header"] = "query"
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    description: str = ""
    required: bool = False

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "in": self.where, "schema": dict(self.schema)}
        doc["required"] = self.required or self.where == "path"
        if self.description:
            doc["description"] = self.description
        return doc


@dataclass(frozen=True)
class Security:
    """An OpenAPI security scheme (``{"type": "apiKey", "in": "header", "name": "Authorization"}``)."""

    name: str
    scheme: Mapping[str, Any]


@dataclass(frozen=True)
class Operation:
    """One method on one path of a surface.

    ``responses`` maps each status the operation can answer to its body type
    (a Struct, or ``None`` for no body) and a description; the surface adds its
    own statuses (:attr:`Surface.errors`). ``public`` skips the surface's guard
    and security (a document, an index).
    """

    method: str
    path: str
    handler: Handler
    summary: str
    responses: Mapping[int, tuple[type[Any] | None, str]]
    body: type[msgspec.Struct] | None = None
    params: Sequence[Param] = ()
    body_limit: int = 64 * 1024
    public: bool = False
    description: str = ""
    extra_methods: Sequence[str] = ()  # served but not documented apart (HEAD beside GET)

    def operation_id(self, mount: str) -> str:
        """``get_api_visitors_visitor_id``: the method and the full path's words."""
        words = re.sub(r"[^A-Za-z0-9]+", "_", mount + self.path).strip("_")
        return f"{self.method.lower()}_{words}"


@dataclass(frozen=True)
class Surface:
    """A REST surface mounted at ``mount`` (below the base path).

    ``guard`` runs before every non-public operation (auth, rate, origin: it
    raises :class:`ApiError`); ``wrap`` wraps every handler (the live API's CORS
    headers on errors); ``errors`` are the statuses every operation may answer
    (the guard's, the store's 503), documented with :class:`ErrorBody`.
    """

    name: str
    mount: str
    description: str
    operations: Sequence[Operation]
    security: Security | None = None
    guard: Guard | None = None
    wrap: Wrap | None = None
    errors: Mapping[int, str] = field(default_factory=dict)

    def routes(self) -> list[Route]:
        """Starlette routes, at their full paths (``mount + path``) below the base path."""
        out = []
        for op in self.operations:
            handler = _endpoint(op, None if op.public else self.guard)
            if self.wrap is not None:
                handler = self.wrap(handler)
            methods = [op.method, *op.extra_methods]
            out.append(Route(self.mount + op.path, _bare(handler), methods=methods, name=op.operation_id(self.mount)))
        return out


def _bare(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(request, None)

    return endpoint


def _endpoint(op: Operation, guard: Guard | None) -> Handler:
    async def endpoint(request: Request, _: Any) -> Response:
        if guard is not None:
            guard(request)
        body = None
        if op.body is not None:
            raw = await read_body(request, op.body_limit)
            body = decode(raw, op.body)
        return await op.handler(request, body)

    return endpoint


def reply(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A Struct (or any msgspec-encodable value) as a JSON response."""
    return Response(msgspec.json.encode(value), status, dict(headers or {}), "application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes: 413 from the declared length, or as soon as
    the bytes received pass it; what follows is never read into memory."""
    too_large = ApiError(413, "request_too_large", f"the body is over {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def decode(raw: bytes, kind: type[T]) -> T:
    """``raw`` JSON as ``kind`` (an empty body is ``{}``); 400 in the API's shape otherwise."""
    if not raw.strip():
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as e:
        raise invalid(e, kind, raw) from None
    except msgspec.DecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None


# --- msgspec's errors in the API's shape --------------------------------------------------
_AT = re.compile(r"^(?P<what>.*?)(?: - at `(?P<where>[^`]*)`(?: in `(?P<within>[^`]*)`)?)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")


def invalid(error: msgspec.ValidationError, kind: type[Any], raw: bytes) -> ApiError:
    """A body's validation error: ``missing_field`` (also a null or empty string where a
    value is required), ``unknown_field``, else ``invalid_field``; ``field`` is the dotted
    path, found in ``raw`` for a value inside a map (msgspec says ``[...]``)."""
    m = _AT.match(str(error))
    assert m is not None
    what, where = m["what"], m["within"] if m["where"] == "key" else m["where"]
    path = _path(where or "$", kind, raw)
    if missing := _MISSING.match(what):
        name = _first_required(kind, [*path, missing["name"]])
        return _field_error("missing_field", name, "is required")
    if unknown := _UNKNOWN.match(what):
        return _field_error("unknown_field", [*path, unknown["name"]], "is not an option")
    if not path:
        return ApiError(400, "invalid_json", "the body must be a JSON object")
    if what.endswith("got `null`") or what.startswith("Expected `str` of length >= 1"):
        return _field_error("missing_field", _first_required(kind, path), "is required")
    what = what[0].lower() + what[1:]
    if m["where"] == "key":
        what = "a key: " + what
    return _field_error("invalid_field", path, f"is invalid ({what})")


def _field_error(code: str, path: Sequence[str], says: str) -> ApiError:
    name = ".".join(path)
    return ApiError(400, code, f"{name} {says}", field=name)


def _path(where: str, kind: type[Any], raw: bytes) -> list[str]:
    """``$.a.b[...]`` as ``["a", "b", <the first key of b whose value does not fit>]``."""
    parts = re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", where)
    out: list[str] = []
    doc: Any = None
    for name, index in parts:
        if index != "...":
            out.append(name or index)
            continue
        if doc is None:
            doc = msgspec.json.decode(raw)
        out.append(_bad_key(doc, kind, out))
    return out


def _bad_key(doc: Any, kind: Any, path: Sequence[str]) -> str:
    """The first key of the map at ``path`` in ``doc`` whose value is not of the declared type."""
    for name in path:
        doc = doc.get(name, {}) if isinstance(doc, dict) else {}
        kind = _field_type(kind, name)
    value_type = next((typing.get_args(t)[1] for t in _members(kind) if typing.get_origin(t) is dict), Any)
    for key, value in doc.items() if isinstance(doc, dict) else ():
        try:
            msgspec.convert(value, value_type)
        except msgspec.ValidationError:
            return str(key)
    return "..."


def _members(kind: Any) -> list[Any]:
    """``kind`` without ``Annotated`` and ``| None``: its alternatives."""
    if typing.get_origin(kind) is typing.Annotated:
        return _members(typing.get_args(kind)[0])
    if (isinstance(kind, type) and issubclass(kind, msgspec.Struct)) or typing.get_origin(kind) is dict:
        return [kind]
    return [m for arg in typing.get_args(kind) for m in _members(arg)]


def _field_type(kind: Any, name: str) -> Any:
    for member in _members(kind):
        if isinstance(member, type) and issubclass(member, msgspec.Struct):
            for f in msgspec.structs.fields(member):
                if f.encode_name == name:
                    return f.type
    return Any


def _first_required(kind: type[Any], path: Sequence[str]) -> list[str]:
    """A missing object is reported as its first required field (``agent`` -> ``agent.id``)."""
    out = list(path)
    current: Any = kind
    for name in path:
        current = _field_type(current, name)
    while True:
        structs = [m for m in _members(current) if isinstance(m, type) and issubclass(m, msgspec.Struct)]
        required = [f for s in structs[:1] for f in msgspec.structs.fields(s) if f.required]
        if not required:
            return out
        out.append(required[0].encode_name)
        current = required[0].type


# --- the document --------------------------------------------------------------------------
def openapi(surfaces: Sequence[Surface], base_path: str, title: str, version: str) -> dict[str, Any]:
    """One OpenAPI 3.1 document for ``surfaces`` served under ``base_path``."""
    types: list[Any] = [ErrorBody]
    for surface in surfaces:
        for op in surface.operations:
            types += [t for t, _ in op.responses.values() if t is not None]
            if op.body is not None:
                types.append(op.body)
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    refs = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    security: dict[str, Any] = {}
    for surface in surfaces:
        if surface.security is not None:
            security[surface.security.name] = dict(surface.security.scheme)
        for op in surface.operations:
            path = surface.mount + op.path
            paths.setdefault(path, {})[op.method.lower()] = _operation(surface, op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "servers": [{"url": base_path or "/"}],
        "tags": [{"name": s.name, "description": s.description} for s in surfaces],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": security},
    }


def _operation(surface: Surface, op: Operation, refs: Mapping[Any, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op.operation_id(surface.mount), "summary": op.summary, "tags": [surface.name]}
    if op.description:
        doc["description"] = op.description
    if op.params:
        doc["parameters"] = [p.document() for p in op.params]
    if op.body is not None:
        content = {"application/json": {"schema": refs[op.body]}}
        required = any(f.required for f in msgspec.structs.fields(op.body))
        doc["requestBody"] = {"required": required, "content": content}
    secured = surface.security is not None and not op.public
    doc["security"] = [{surface.security.name: []}] if secured and surface.security else []
    statuses: dict[int, tuple[type[Any] | None, str]] = {}
    if not op.public:
        statuses.update({s: (ErrorBody, why) for s, why in surface.errors.items()})
    if op.body is not None:
        statuses.setdefault(400, (ErrorBody, "a field or the JSON is invalid (`field` names it)"))
        statuses.setdefault(413, (ErrorBody, f"the body is over {op.body_limit} bytes"))
    statuses.update(op.responses)
    responses: dict[str, Any] = {}
    for status, (kind, why) in sorted(statuses.items()):
        answer: dict[str, Any] = {"description": why}
        if kind is not None:
            answer["content"] = {"application/json": {"schema": refs[kind]}}
        responses[str(status)] = answer
    doc["responses"] = responses
    return doc
