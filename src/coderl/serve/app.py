"""The HTTP API of ``coderl serve-executor`` (FastAPI), built by :func:`create_app`.

* ``POST /run_code``   – SandboxFusion's request and response (``runcode.py``): veRL's
  ``sandbox_fusion`` reward can point at it unchanged.
* ``POST /v1/execute`` – programs + one problem's test fields -> coderl ``Result`` dicts, in order.
* ``GET /health``      – liveness (no token needed; no body): 200 while a worker runs, else 503;
  also the bounds a client sizes its batches by (``max_programs``, ``capacity``).
* ``GET /metrics``     – queue depth, in flight, programs/s, verdict counts, rejections.

Errors are JSON ``{"error", "message", "field"?}``: 400 for a body that is not JSON, 422 naming the
field for a wrong type or value (or a request this server can never run: more programs or tests than
it takes, a stdin larger than the sandbox may write), 401 without the token, 413 past the body limit,
429 when the admission bound is reached (nothing of the request queued; ``Retry-After: 1``). A
client that goes away before its answer cancels its programs that have not started.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Awaitable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from coderl.execution.exec_config import ExecConfig
from coderl.problems.schema import ProblemError
from coderl.serve.engine import Busy, Engine, Job, NeverFits
from coderl.serve.gate import Gate, error_body
from coderl.serve.runcode import stdio_problem, to_sandbox_fusion
from coderl.serve.schemas import ExecuteRequest, RunCodeRequest, problem_error_message
from coderl.serve.serve_config import ServeConfig


class ClientGone(Exception):
    """The client disconnected before its answer (its programs not yet started were cancelled)."""


def create_app(serve: ServeConfig, execution: ExecConfig, token: str | None = None) -> FastAPI:
    """The app; its lifespan starts the execution workers (unless already started: ``Engine.start``)
    and stops them. ``token``: the bearer token (already resolved from the environment by the
    caller; None: no authentication)."""
    engine = Engine(execution, serve)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        await asyncio.to_thread(engine.start)
        try:
            yield
        finally:
            await asyncio.to_thread(engine.close)

    app = FastAPI(title="coderl executor", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.add_middleware(Gate, token=token, max_body_bytes=serve.max_body_bytes, on_reject=engine.metrics.reject)
    _errors(app, engine)
    _routes(app, engine, serve)
    return app


async def until_disconnect(request: Request, work: Awaitable[Any]) -> Any:
    """``await work``, unless the client disconnects first: then ``work`` is cancelled (the
    engine drops its programs not yet started) and ClientGone raised."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if not task.cancelled() and task.done():
        return task.result()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientGone()


async def _disconnected(request: Request) -> None:
    """Return when the server reports the client gone (the body is already read: the next
    message the server hands the app is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _routes(app: FastAPI, engine: Engine, serve: ServeConfig) -> None:
    capture = engine.config.max_output_kb << 10  # /run_code: the whole stdout comes back

    @app.post("/run_code")
    async def run_code(req: RunCodeRequest, request: Request) -> dict[str, Any]:
        engine.metrics.request("run_code")
        timeout, memory = engine.effective_limits(req.run_timeout, req.memory_limit_MB)
        problem = stdio_problem(req.stdin)
        engine.check_problem(problem, "hidden", stdin_field="stdin")
        job = Job(problem, req.code, "hidden", timeout, memory, True, capture=capture, real_exit=True)
        [result] = await until_disconnect(request, engine.run([job]))
        return {**to_sandbox_fusion(result), "limits": {"run_timeout": timeout, "memory_limit_MB": memory}}

    @app.post("/v1/execute")
    async def execute(req: ExecuteRequest, request: Request) -> dict[str, Any]:
        engine.metrics.request("execute")
        if len(req.programs) > serve.max_programs:
            raise NeverFits("programs", f"{len(req.programs)} programs, at most {serve.max_programs} per "
                                         "request (--max-programs)")
        problem = req.problem.to_problem()
        if req.tests == "example" and not problem.num_example_tests:
            raise NeverFits("problem.example_tests", "empty, so tests='example' has nothing to run")
        engine.check_problem(problem, req.tests)
        timeout, memory = engine.effective_limits(req.timeout, req.memory_mb)
        jobs = [Job(problem, p, req.tests, timeout, memory, req.early_exit) for p in req.programs]
        results = await until_disconnect(request, engine.run(jobs))
        return {"results": [r.to_dict() for r in results], "limits": {"timeout": timeout, "memory_mb": memory},
                "isolation": engine.executor.isolation}

    @app.get("/health")
    async def health() -> JSONResponse:
        body = engine.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return {**engine.state(), **engine.metrics.snapshot()}


def _field_name(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def _errors(app: FastAPI, engine: Engine) -> None:
    def reply(status: int, message: str, field: str | None = None, **extra: Any) -> JSONResponse:
        engine.metrics.reject(status)
        return JSONResponse(error_body(status, message, field), status_code=status, **extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            ctx = bad_json.get("ctx") or {}
            return reply(400, f"the body is not valid JSON: {ctx.get('error', bad_json.get('msg'))} "
                              f"(at character {bad_json['loc'][-1]})")
        first = errors[0]
        if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
            return reply(400, "the body is empty: expected a JSON object")
        field = _field_name(tuple(first.get("loc", ())))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        msg = str(first.get("msg", "")).removeprefix("Value error, ")
        return reply(422, f"{field}: {msg}{more}", field)

    @app.exception_handler(ProblemError)
    async def problem_error(_request: Request, exc: ProblemError) -> JSONResponse:
        return reply(422, problem_error_message(exc), "problem")

    @app.exception_handler(NeverFits)
    async def never_fits(_request: Request, exc: NeverFits) -> JSONResponse:
        return reply(422, str(exc), exc.field)

    @app.exception_handler(ClientGone)
    async def gone(_request: Request, _exc: ClientGone) -> Response:
        engine.metrics.disconnect()
        return Response(status_code=499)  # (nobody reads it: nginx's "client closed request")

    @app.exception_handler(Busy)
    async def busy(_request: Request, exc: Busy) -> JSONResponse:
        return reply(429, str(exc), headers={"retry-after": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return reply(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))
