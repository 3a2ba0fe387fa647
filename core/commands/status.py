"""`stave status DIR [--json]`: batches, jobs, stages and breakers, read from the checkpoint store."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

from core.commands.base import Subcommand


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="DIR", help="an output folder")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--jobs", action="store_true", help="list every job with its stages")


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def collect(out_dir: str, with_jobs: bool) -> dict:
    from core.engine.store import Store

    with Store.open(out_dir, create=False) as store:
        batches = []
        for b in store.list_batches():
            entry = {"batch_id": b.id, "status": b.status.value, "created_at": b.created_at,
                     "updated_at": b.updated_at, "notes": b.notes, "counts": store.counts(b.id)}
            if with_jobs:
                stages: dict[int, dict] = {}
                for row in store.batch_stages(b.id):
                    stages.setdefault(row.job_id, {})[row.stage] = row.status.value
                entry["jobs"] = [{"job_id": j.id, "path": j.input_path, "song_id": j.song_id, "status": j.status.value,
                                  "degraded": j.degraded, "error_kind": j.error_kind.value if j.error_kind else None,
                                  "error_reason": j.error_reason, "stages": stages.get(j.id, {})}
                                 for j in store.jobs(b.id)]
            batches.append(entry)
        breakers = store.breakers()
    return {"out_dir": out_dir, "batches": batches, "breakers": breakers}


def _run(args: argparse.Namespace) -> int:
    from core.engine.scan import display_path
    from core.engine.store import StoreError

    out_dir = os.path.abspath(args.out)
    try:
        doc = collect(out_dir, args.json or args.jobs)
    except StoreError as exc:
        print(f"stave: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"{out_dir}")
    if not doc["batches"]:
        print("  no batches yet")
    for b in doc["batches"]:
        c = b["counts"]
        print(f"  batch {b['batch_id']}  {b['status']:<11} created {_when(b['created_at'])}  "
              f"done {c['done']}  failed {c['failed'] + c['quarantined']}  pending {c['pending'] + c['running']}  "
              f"skipped {c['skipped']}  cancelled {c['cancelled']}")
        if b["notes"]:
            print(f"      {b['notes']}")
        for j in b.get("jobs", []):
            ticks = " ".join(f"{k}:{v}" for k, v in j["stages"].items())
            err = (f"  {j['error_kind']}: {j['error_reason']}" if j["error_kind"]
                   else f"  {j['error_reason']}" if j["error_reason"] else "")
            print(f"      [{j['status']:<11}] {display_path(j['path'])}  {ticks}{err}")
    if doc["breakers"]:
        print("  breakers:")
        for name, state in sorted(doc["breakers"].items()):
            print(f"      {name:<14} {state.get('state', '?')}")
    unfinished = [b for b in doc["batches"] if b["status"] in ("running", "paused", "interrupted")]
    if unfinished:
        print(f"\n  Resume with: stave resume {out_dir}")
    return 0


COMMAND = Subcommand(name="status", help="show the batches, jobs and breakers of an output folder",
                     configure=_configure, run=_run)
