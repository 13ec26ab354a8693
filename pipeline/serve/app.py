"""The HTTP API and the page of `pipe serve`, on FastAPI.

Endpoints (each takes `?run=NAME`, default the first run loaded): `POST /score`,
`POST /rank`, `POST /explain`, `GET /search`, `GET /runs`, `GET /users`, `GET /health`,
the page at `/`, the schema at `/openapi.json` and `/docs`. Every endpoint is always
there; one that does not apply to a run answers 422 with the reason. Errors are JSON
`{"error": message, "status": code}`: 400 bad input (the field named), 401 no or wrong
token, 404 unknown run, 413 too large, 415 not an image, 422 not for this run.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from pipeline.core.errors import NotApplicable, PipeError
from pipeline.core.io import json_safe
from pipeline.serve.batching import MicroBatcher
from pipeline.serve.engine import Draft, Engine, split_rows
from pipeline.serve.parse import BadRequest, drafts_of, read_body
from pipeline.serve.uploads import Limits

OPEN = {"/", "/health", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/favicon.ico"}  # no token needed


class Post(BaseModel):
    """A draft: the posts contract's fields; the image as base64 (or a multipart part `image:<post_id>`)."""

    model_config = ConfigDict(extra="allow")
    post_id: str
    user_id: str
    title: str | None = None
    text: str | None = None
    posted_at: str | float | None = None  # ISO 8601 or unix seconds; default now
    image_base64: str | None = None


def _body(key: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    post = Post.model_json_schema()
    obj = {"type": "object", "required": [key], "properties": {key: {"type": "array", "items": post}, **(extra or {})}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": obj},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            key: {"type": "string", "description": f"the JSON list of {key}"},
            **({k: {"type": "string"} for k in (extra or {})}),
        }, "description": "images as file parts named image:<post_id>"}}}}}


@dataclass
class Served:
    """A run and the machinery around it."""

    engine: Engine
    model: ThreadPoolExecutor  # the one thread that runs its head and extractors
    batcher: MicroBatcher


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status,
                        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


def create_app(engines: list[Engine], token: str | None = None, limits: Limits = Limits(), window_ms: float = 5.0,
               max_batch: int = 64, decode_threads: int = 2) -> FastAPI:
    """The app over loaded runs; `token` (when set) is required as `Authorization: Bearer TOKEN`."""
    served: dict[str, Served] = {}
    decode = ThreadPoolExecutor(decode_threads, thread_name_prefix="pipe-serve-decode")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for e in engines:
            model = ThreadPoolExecutor(1, thread_name_prefix=f"pipe-serve-{e.name}")
            merge = e.ctx.task.scores_independent()
            served[e.name] = Served(e, model, MicroBatcher(lambda groups, e=e: _score_groups(e, groups), model,
                                                           window_ms / 1000, max_batch, merge))
            served[e.name].batcher.start()
        yield
        for s in served.values():  # in-flight requests finish before the model threads go
            await s.batcher.stop()
            s.model.shutdown(wait=True)
        decode.shutdown(wait=True)

    app = FastAPI(title="pipe serve", lifespan=lifespan,
                  description="Score drafts before posting with trained pipe runs (same scores as `pipe score`).")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token and request.url.path not in OPEN:
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                return error(401, "a token is required: send Authorization: Bearer TOKEN")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limits.max_body_bytes:
            return error(413, f"request body of {length} bytes, over the limit of {limits.max_body_bytes}")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        e = exc.errors()[0]
        return error(400, f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")

    def pick(run: str | None) -> Served:
        if not served:
            raise BadRequest("no run loaded", 503)
        if run is None:
            return next(iter(served.values()))
        if run not in served:
            raise BadRequest(f"run: no run {run!r} loaded (loaded: {', '.join(served)})", 404)
        return served[run]

    async def guarded(fn, *args):
        """Run a handler body; PipeErrors become the JSON errors above."""
        try:
            return await fn(*args)
        except BadRequest as e:
            return error(e.status, str(e))
        except NotApplicable as e:
            return error(422, str(e))
        except PipeError as e:
            return error(400, str(e))

    async def drafts_from(request: Request, s: Served, key: str, user_field: bool = False) -> tuple[list[Draft], str | None]:
        body, images = await read_body(request, key, limits)
        user = None
        if user_field:
            user = body.get("user_id")
            if not isinstance(user, str) or not user:
                raise BadRequest("user_id: the account whose drafts are ranked is required")
        drafts = drafts_of(body, images, key, limits, user)
        await asyncio.get_running_loop().run_in_executor(decode, s.engine.prepare, drafts)
        carried = [d for d in drafts if d.image is not None]
        if carried and len(carried) == len(drafts) and all(d.error is not None for d in carried):
            first = next(i for i, d in enumerate(drafts) if d.error is not None)
            raise BadRequest(f"{key}[{first}].image: {drafts[first].error.reason}", drafts[first].error.status)
        return drafts, user

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("pipeline.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: the runs loaded."""
        return {"status": "ok", "runs": list(served)}

    @app.get("/runs")
    async def runs() -> dict[str, Any]:
        """What is loaded: head, task, dataset, test metrics, extractors; cache and batching counters."""
        return json_safe({"runs": [{**s.engine.describe(), "cache": s.engine.features.stats(),
                                    "batching": s.batcher.stats()} for s in served.values()],
                          "limits": limits.__dict__, "token": bool(token)})

    @app.get("/users")
    async def users(run: str | None = None, q: str = "", limit: int = Query(100, ge=1, le=1000)):
        """Accounts of the run's training part (most posts first), with their mean score there."""
        async def body():
            return json_safe({"users": pick(run).engine.users(q, limit)})
        return await guarded(body)

    @app.post("/score", openapi_extra=_body("posts"))
    async def score(request: Request, run: str | None = None):
        """Scores of one or more posts: score, the user's training mean, the gain over it,
        unseen_user, missing_image (and image_error when an image was refused)."""
        async def body():
            s = pick(run)
            drafts, _ = await drafts_from(request, s, "posts")
            return json_safe({"run": s.engine.name, "scores": await s.batcher.submit(drafts)})
        return await guarded(body)

    @app.post("/rank", openapi_extra=_body("drafts", {"user_id": {"type": "string"}}))
    async def rank(request: Request, run: str | None = None):
        """One account's drafts, best first, with the gain over the account's training mean."""
        async def body():
            s = pick(run)
            if not s.engine.task_cls.ranks_posts:
                raise NotApplicable(f"run {s.engine.name} is a {s.engine.run.task} run: ranking drafts needs a "
                                    "score per post (a regression run)")
            drafts, user = await drafts_from(request, s, "drafts", user_field=True)
            rows = await s.batcher.submit(drafts)
            order = {d.post_id: i for i, d in enumerate(drafts)}
            rows.sort(key=lambda r: (-r["score"], order[r["post_id"]]))
            for i, r in enumerate(rows):
                r["rank"] = i + 1
            mean = s.engine.user_mean(user) if not all(r["unseen_user"] for r in rows) else None
            return json_safe({"run": s.engine.name, "user_id": user, "user_mean": mean, "unseen_user": mean is None,
                              "drafts": rows})
        return await guarded(body)

    @app.post("/explain", openapi_extra=_body("posts"), responses={200: {"content": {"image/png": {}}}})
    async def explain(request: Request, run: str | None = None, format: str = Query("json", pattern="^(json|png)$"),
                      kind: str = "regions"):
        """The head's attention per post (Head.explain): weights as JSON with the PNG maps, or
        with format=png the `kind` map (regions, words, modalities, history) of the first post."""
        async def body():
            s = pick(run)
            drafts, _ = await drafts_from(request, s, "posts")
            done = await asyncio.get_running_loop().run_in_executor(s.model, s.engine.explain, drafts)
            if format == "png":
                pngs = done[0][1]
                if kind not in pngs:
                    raise NotApplicable(f"kind: no {kind!r} map for this post and head (maps: {', '.join(pngs) or 'none'})")
                return Response(pngs[kind], media_type="image/png")
            return json_safe({"run": s.engine.name, "explanations": [
                {**{k: v for k, v in e.__dict__.items() if k != "files"},
                 "images": {k: "data:image/png;base64," + base64.b64encode(v).decode() for k, v in pngs.items()}}
                for e, pngs in done]})
        return await guarded(body)

    @app.get("/search")
    async def search(tag: str, run: str | None = None, k: int = Query(10, ge=1, le=1000)):
        """Cross-modal search (embedding runs with tags): the run's dataset's images nearest to a tag."""
        async def body():
            s = pick(run)
            try:
                rows = await asyncio.get_running_loop().run_in_executor(s.model, s.engine.search, tag, k)
            except NotApplicable:
                raise
            except PipeError as e:
                raise BadRequest(f"tag: {e}") from None
            return json_safe({"run": s.engine.name, "tag": tag, "results": rows})
        return await guarded(body)

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    return app


def _score_groups(engine: Engine, groups: list[list[Draft]]) -> list[list[dict[str, Any]]]:
    """One pass over several requests' drafts (the batcher's unit of work)."""
    return split_rows(engine.score([d for g in groups for d in g]), groups)


class BodyLimit:
    """ASGI middleware: a body streamed past max_bytes (with or without Content-Length) stops
    with a 413 where the handler reads it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = 0

        async def counting():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise BadRequest(f"request body over the limit of {self.max_bytes} bytes", 413)
            return msg

        await self.app(scope, counting, send)
