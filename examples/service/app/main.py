"""HTTP API of the sample service.

Every response carries `X-App-Version` so that a release test can tell which
release answered each request while traffic is being switched.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.db import Database

VERSION = os.environ.get("APP_VERSION", "dev")
DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:////data/congress.db")
ALLOWED_ORIGINS = [o for o in os.environ.get("CORS_ORIGINS", "").split(",") if o]
STARTED = time.time()

db = Database(DATABASE_URL)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    if db.kind == "sqlite":
        from app.generate import generate_once

        generate_once(Path(db.path), float(os.environ.get("SEED_SCALE", "0.5")))
    yield


app = FastAPI(title="Congressional Data API", version=VERSION, lifespan=lifespan)


@app.middleware("http")
async def headers(request: Request, call_next: Any) -> Response:
    origin = request.headers.get("origin")
    if request.method == "OPTIONS" and origin:
        response: Response = Response(status_code=204)
    else:
        response = await call_next(request)
    response.headers["X-App-Version"] = VERSION
    response.headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if origin and origin in ALLOWED_ORIGINS:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response


@app.get("/health")
def health() -> JSONResponse:
    """Ready only when the database answers: a container is not healthy without data."""
    try:
        db.query("SELECT 1 AS ok")
        members = db.query("SELECT count(*) AS n FROM members")[0]["n"]
    except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
        return JSONResponse(
            {"status": "unhealthy", "version": VERSION, "error": type(exc).__name__},
            status_code=503,
        )
    return JSONResponse(
        {
            "status": "ok",
            "version": VERSION,
            "database": db.kind,
            "members": members,
            "uptime_s": round(time.time() - STARTED, 1),
        }
    )


@app.get("/members")
def members(
    state: str | None = None, party: str | None = None, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    sql = "SELECT id, bioguide_id, name, party, state, chamber FROM members WHERE 1=1"
    params: list[Any] = []
    if state:
        sql += " AND state = ?"
        params.append(state.upper())
    if party:
        sql += " AND party = ?"
        params.append(party.upper())
    sql += " ORDER BY id LIMIT ? OFFSET ?"
    params += [min(max(limit, 1), 500), max(offset, 0)]
    return db.query(sql, params)


@app.get("/members/{member_id}")
def member(member_id: int) -> dict[str, Any]:
    rows = db.query("SELECT * FROM members WHERE id = ?", [member_id])
    if not rows:
        raise HTTPException(404, "member not found")
    return rows[0]


@app.get("/bills")
def bills(status: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    sql = "SELECT id, number, title, sponsor_id, introduced, status FROM bills"
    params: list[Any] = []
    if status:
        sql += " WHERE status = ?"
        params.append(status)
    sql += " ORDER BY id LIMIT ? OFFSET ?"
    params += [min(max(limit, 1), 500), max(offset, 0)]
    return db.query(sql, params)


@app.get("/bills/{bill_id}")
def bill(bill_id: int) -> dict[str, Any]:
    rows = db.query("SELECT * FROM bills WHERE id = ?", [bill_id])
    if not rows:
        raise HTTPException(404, "bill not found")
    return rows[0]


@app.get("/search")
def search(q: str, limit: int = 20) -> dict[str, Any]:
    if len(q) < 2:
        raise HTTPException(422, "query must be at least 2 characters")
    pattern = f"%{q.lower()}%"
    found_bills = db.query(
        "SELECT id, number, title FROM bills WHERE lower(title) LIKE ? ORDER BY id LIMIT ?",
        [pattern, min(limit, 100)],
    )
    found_members = db.query(
        "SELECT id, name, state FROM members WHERE lower(name) LIKE ? ORDER BY id LIMIT ?",
        [pattern, min(limit, 100)],
    )
    return {"bills": found_bills, "members": found_members}


@app.get("/stats")
def stats() -> dict[str, Any]:
    by_party = db.query("SELECT party, count(*) AS n FROM members GROUP BY party ORDER BY party")
    by_status = db.query("SELECT status, count(*) AS n FROM bills GROUP BY status ORDER BY status")
    votes = db.query("SELECT count(*) AS n FROM votes")[0]["n"]
    return {
        "members_by_party": {r["party"]: r["n"] for r in by_party},
        "bills_by_status": {r["status"]: r["n"] for r in by_status},
        "votes": votes,
    }


class VoteIn(BaseModel):
    bill_id: int = Field(gt=0)
    member_id: int = Field(gt=0)
    position: Literal["yea", "nay", "present", "not_voting"]
    request_id: str | None = Field(default=None, max_length=64)


@app.post("/votes", status_code=201)
def record_vote(vote: VoteIn) -> dict[str, Any]:
    """The one write: idempotent by request_id so a client may retry safely."""
    request_id = vote.request_id or uuid.uuid4().hex
    db.execute(
        "INSERT INTO votes (bill_id, member_id, position, request_id) VALUES (?,?,?,?)"
        " ON CONFLICT (request_id) DO NOTHING",
        [vote.bill_id, vote.member_id, vote.position, request_id],
    )
    row = db.query("SELECT id FROM votes WHERE request_id = ?", [request_id])[0]
    return {"id": row["id"], "request_id": request_id, "version": VERSION}
