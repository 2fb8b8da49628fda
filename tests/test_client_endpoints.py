"""The decorator and the ASGI middleware on real apps served by uvicorn, and the README's
"Connect your model server" snippet as written, against a real `driftline serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from k8s_support import free_port, wait_for
from support import EXAMPLES, MONITOR, Service
from test_readme import blocks, section

from driftline.client import AsyncDriftClient, monitor_endpoint

ROWS: list[dict[str, Any]] = __import__("json").loads((EXAMPLES / "baseline_data.json").read_text())
COMPLETE = [r for r in ROWS if all(v is not None for v in r.values())][:60]


@contextmanager
def uvicorn(directory: Path, module: str) -> Iterator[str]:
    """`uvicorn module:app` as a process; stopped with SIGTERM (the app's shutdown runs)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"{module}:app",
            "--port",
            str(port),
            "--app-dir",
            str(directory),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool | None:
            if process.poll() is not None:
                pytest.fail(f"uvicorn exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                return True if httpx2.get(f"{url}/docs").status_code < 500 else None
            except httpx2.HTTPError:
                return None

        wait_for(f"uvicorn {module}", up, timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        # After its graceful shutdown uvicorn raises the signal it got again: -SIGTERM.
        assert process.returncode in (0, -15), process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]


def test_the_readme_fastapi_snippet_monitors_its_endpoint(
    embedded: Service, tmp_path: Path
) -> None:
    (snippet,) = blocks("python", section("Connect your model server"))
    assert 'DriftClient("http://driftline:8080", "credit-risk")' in snippet
    (tmp_path / "model_server.py").write_text(
        snippet.replace("http://driftline:8080", embedded.url)
    )
    with uvicorn(tmp_path, "model_server") as url:
        for row in COMPLETE:
            answer = httpx2.post(f"{url}/predict", json=row)
            assert answer.status_code == 200, answer.text
            assert set(answer.json()) == {"default_probability"}
        bad = httpx2.post(f"{url}/predict", json={"age": "old"})
        assert bad.status_code == 422  # FastAPI refused it: the endpoint never ran
    # Shutdown closed the client, which sent what was queued.
    assert embedded.counted() == len(COMPLETE)
    ages = [r["age"] for r in COMPLETE]
    assert embedded.report()["features"]["age"]["mean"] == pytest.approx(
        sum(ages) / len(ages), abs=1e-3
    )


MIDDLEWARE_APP = """
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from driftline.client import DriftClient, DriftMiddleware

client = DriftClient("{url}", "credit-risk", max_delay=0.05)


async def predict(request: Request) -> JSONResponse:
    body = await request.json()
    if "age" not in body and "features" not in body:
        return JSONResponse({{"detail": "no age"}}, status_code=422)
    return JSONResponse({{"score": 0.5}})


@asynccontextmanager
async def lifespan(app):
    yield
    client.close(timeout=5)


app = Starlette(routes=[Route("/predict", predict, methods=["POST"]),
                        Route("/other", predict, methods=["POST"])],
                lifespan=lifespan)
app.add_middleware(DriftMiddleware, client=client, paths=["/predict"])
"""


def test_the_middleware_logs_2xx_bodies_of_its_paths_only(
    embedded: Service, tmp_path: Path
) -> None:
    (tmp_path / "starlette_app.py").write_text(MIDDLEWARE_APP.format(url=embedded.url))
    with uvicorn(tmp_path, "starlette_app") as url:
        for row in COMPLETE[:20]:  # flat features
            assert httpx2.post(f"{url}/predict", json=row).status_code == 200
        for row in COMPLETE[20:30]:  # driftline's own event shape
            assert httpx2.post(f"{url}/predict", json={"features": row}).status_code == 200
        # Streamed in chunks, as large bodies arrive.
        chunks = [
            __import__("json").dumps(COMPLETE[30]).encode()[i : i + 7] for i in range(0, 200, 7)
        ]
        assert httpx2.post(f"{url}/predict", content=iter(chunks)).status_code == 200
        assert httpx2.post(f"{url}/predict", json={"x": 1}).status_code == 422  # not logged
        assert httpx2.post(f"{url}/other", json=COMPLETE[0]).status_code == 200  # not watched
    assert embedded.counted() == 31


async def test_the_decorator_with_the_async_client(embedded: Service) -> None:
    async with AsyncDriftClient(embedded.url, MONITOR, max_delay=0.05) as client:

        @monitor_endpoint(client, features="features")
        async def score(model: str, features: dict[str, Any]) -> float:
            return 0.5

        @monitor_endpoint(client, features=lambda batch: batch["rows"])
        async def score_many(batch: dict[str, Any]) -> int:
            return len(batch["rows"])

        for row in COMPLETE[:10]:
            assert await score("m", features=row) == 0.5
        assert await score_many({"rows": COMPLETE[10:25]}) == 15
        assert await client.flush(timeout=30)
        stats = client.stats()
    assert (stats.sent, stats.dropped) == (25, 0)
    assert embedded.counted() == 25

    with pytest.raises(TypeError, match="needs an async endpoint"):

        @monitor_endpoint(client)
        def blocking(features: dict[str, Any]) -> None:
            return None


def test_the_client_imports_without_pandas_fastapi_or_starlette() -> None:
    code = (
        "import sys\n"
        "for name in ('pandas', 'fastapi', 'starlette', 'pyarrow'):\n"
        "    sys.modules[name] = None  # importing it fails\n"
        "from driftline.client import DriftClient, DriftMiddleware, monitor_endpoint\n"
        "import numpy as np\n"
        "client = DriftClient('http://127.0.0.1:1', 'm')\n"
        "client.log_batch(np.ones((3, 2)), columns=['a', 'b'])\n"
        "client.log({'a': 1})\n"
        "print(client.stats().logged)\n"
        "client.close(timeout=0.1)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4"
