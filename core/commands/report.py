"""The closing summary of a batch: every failed file with its kind, reason and suggestion."""

from __future__ import annotations

import json
import sys

from core.engine.scan import display_path
from core.engine.store_rows import BatchStatus


def exit_code(summary) -> int:
    """0 only when the batch finished and every file succeeded; a paused or cancelled batch is not a success."""
    return 0 if summary.status is BatchStatus.FINISHED and not summary.failed else 1


def print_summary(summary, out_dir: str, *, json_mode: bool = False, stream=None) -> int:
    """Print the summary (to stderr, or as one JSON object on stdout); return the exit code."""
    if json_mode:
        doc = {"event": "Summary", "batch_id": summary.batch_id, "status": summary.status.value,
               "counts": summary.counts, "failed": summary.failed, "degraded": summary.degraded,
               "skipped": summary.skipped, "elapsed_s": summary.elapsed_s, "out_dir": out_dir,
               "pause_reason": summary.pause_reason}
        print(json.dumps(doc), file=stream or sys.stdout, flush=True)
        return exit_code(summary)
    out = stream or sys.stderr
    c = summary.counts
    print("", file=out)
    print(f"Batch {summary.batch_id}: {summary.status.value} in {summary.elapsed_s:.1f} s — "
          f"{c.get('done', 0)} done, {c.get('failed', 0) + c.get('quarantined', 0)} failed, "
          f"{c.get('skipped', 0)} skipped, {c.get('pending', 0)} pending, {len(summary.degraded)} degraded",
          file=out)
    if summary.failed:
        print("\nFailed:", file=out)
        for f in summary.failed:
            tag = " (set aside)" if f.get("status") == "quarantined" else ""
            print(f"  {display_path(f['path'])}{tag}\n"
                  f"      {f['kind']} at {f.get('stage') or '?'}: {f['reason']}\n"
                  f"      -> {f['suggestion']}", file=out)
    if summary.skipped:
        print("\nSkipped:", file=out)
        for f in summary.skipped:
            print(f"  {display_path(f['path'])}: {f['reason']}", file=out)
    if summary.degraded:
        print("\nDegraded (a fallback was used; `stave resume --retry-failed` does not redo these):", file=out)
        reasons: dict[str, int] = {}
        for d in summary.degraded:
            for r in d["reasons"]:
                reasons[r] = reasons.get(r, 0) + 1
        for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            print(f"  {n} file(s): {r}", file=out)
    if summary.status is BatchStatus.PAUSED:
        why = f" ({summary.pause_reason})" if summary.pause_reason else ""
        print(f"\nPaused{why}. Finish it with:  stave resume {out_dir}", file=out)
    print(f"\nResults: {out_dir}  (songs.parquet, bars.parquet, notes.parquet, one folder per song)", file=out)
    if summary.failed:
        from core.logs import log_file_path

        print(f"Log:     {log_file_path()}", file=out)
    return exit_code(summary)
