#!/usr/bin/python3
"""A Tasker worker in Python: runs the steps of namespaces declared external.

It speaks the SQL worker contract (docs/workers.md) through psycopg 3
(Debian: python3-psycopg): read step messages with pgmq.read_with_poll, start
each with tasker.step_begin, run its handler, and report with
tasker.step_complete or tasker.step_fail. A long handler is kept alive with
tasker.step_heartbeat.

    /usr/bin/python3 worker.py --database-url postgres://... linear_workflow

Handlers: demo.math (the reference workflows' arithmetic) and noop. Its
transitions are recorded as external:<--name> (default python-worker). For
tests only, TASKER_EXAMPLE_SLOW_STEP=<step name>:<ms> makes that step wait
before its handler runs, so that the worker can be killed mid-step.
"""

import argparse
import json
import math
import os
import signal
import sys
import threading

import psycopg
from psycopg.types.json import Jsonb


class StepError(Exception):
    """A failure the worker reports with its kind and whether to retry."""

    def __init__(self, kind, message, retryable=True):
        super().__init__(message)
        self.kind, self.message, self.retryable = kind, message, retryable


def number(x):
    """A result number as the Go handlers write it: integral values without
    a fraction."""
    return int(x) if float(x).is_integer() else x


def math_inputs(work):
    """context.even_number for a root; else the parents' results in the
    order of their names."""
    parents = work["parents"] or {}
    if not parents:
        n = (work["context"] or {}).get("even_number")
        if not isinstance(n, (int, float)) or isinstance(n, bool):
            raise StepError("invalid_input", "context.even_number is missing: the task needs an even integer", False)
        if n != math.trunc(n) or abs(n) > 2**53:
            raise StepError("invalid_input", f"context.even_number must be an integer, got {n}", False)
        if int(n) % 2 != 0:
            raise StepError("invalid_input", f"context.even_number must be even, got {int(n)}", False)
        return [float(n)]
    inputs = []
    for name in sorted(parents):
        result = parents[name]
        if not isinstance(result, dict) or not isinstance(result.get("result"), (int, float)):
            raise StepError("invalid_input", f"result of parent {name} is not a number", False)
        inputs.append(float(result["result"]))
    return inputs


def demo_math(work):
    cfg = work["config"] or {}
    op, operand = cfg.get("op"), cfg.get("operand")
    inputs = math_inputs(work)

    def one():
        if len(inputs) != 1:
            raise StepError("bad_config", f"step {work['step_name']}: op {op!r} takes one input, got {len(inputs)}", False)
        return inputs[0]

    def y():
        if operand is None:
            raise StepError("bad_config", f"step {work['step_name']}: op {op!r} needs an operand", False)
        return float(operand)

    if op == "square":
        out = one() ** 2
    elif op == "add":
        out = one() + y()
    elif op == "multiply":
        out = one() * y()
    elif op == "divide":
        d = y()
        if d == 0:
            raise StepError("bad_config", f"step {work['step_name']}: divide by zero", False)
        out = one() / d
    elif op == "average":
        out = sum(inputs) / len(inputs)
    elif op == "multiply_all":
        out = math.prod(inputs)
    else:
        raise StepError("bad_config", f"step {work['step_name']}: unknown op {op!r}", False)
    return {"result": number(out)}


def noop(work):
    """noop, as the Go one: {} or its config's "result"."""
    return (work["config"] or {}).get("result", {})


HANDLERS = {"demo.math": demo_math, "noop": noop}


def slow_step():
    """TASKER_EXAMPLE_SLOW_STEP=<step name>:<ms> makes that step wait first
    (for tests, to stop a worker mid-step; SIGTERM cuts the wait short)."""
    spec = os.environ.get("TASKER_EXAMPLE_SLOW_STEP", "")
    name, _, ms = spec.partition(":")
    return (name, int(ms) / 1000) if name and ms else (None, 0)


class Worker:
    def __init__(self, url, name, namespaces, vt, batch, poll):
        self.url, self.name, self.vt, self.batch, self.poll = url, name, vt, batch, poll
        self.queues = [ns + "_queue" for ns in namespaces]
        # Each queue's read waits its share of the poll.
        self.wait = max(1, poll // len(self.queues))
        self.stopping = threading.Event()
        self.slow_name, self.slow_secs = slow_step()

    def run(self):
        with psycopg.connect(self.url, autocommit=True, application_name=self.name) as conn:
            while not self.stopping.is_set():
                for q in self.queues:
                    rows = conn.execute(
                        "SELECT msg_id FROM pgmq.read_with_poll(%s, %s, %s, %s, 100)",
                        (q, self.vt, self.batch, self.wait),
                    ).fetchall()
                    for (msg_id,) in rows:
                        if self.stopping.is_set():
                            return  # the message comes back after its visibility timeout
                        self.step(conn, q, msg_id)

    def step(self, conn, q, msg_id):
        try:
            cur = conn.execute("SELECT * FROM tasker.step_begin(%s, %s)", (q, msg_id))
        except psycopg.Error as e:
            # TK404: the message is gone (its visibility timeout passed while
            # earlier messages of the batch ran, and another worker took it).
            if e.sqlstate is None:
                raise  # not a refusal: the connection failed
            print(f"{q} msg {msg_id}: not started ({e.sqlstate}): {e}", file=sys.stderr, flush=True)
            return
        cols = [c.name for c in cur.description]
        work = dict(zip(cols, cur.fetchone()))
        if work["status"] != "started":
            print(f"{q} msg {msg_id}: {work['status']}: {work['reason']}", file=sys.stderr, flush=True)
            return
        call = (q, msg_id, work["step_uuid"], work["attempt"])
        done = threading.Event()
        beat = threading.Thread(target=self.heartbeat, args=(call, done), daemon=True)
        beat.start()
        try:
            if work["step_name"] == self.slow_name:
                self.stopping.wait(self.slow_secs)
            handler = HANDLERS.get(work["handler"])
            if handler is None:
                raise StepError("unknown_handler", f"no handler {work['handler']!r} in the Python worker", False)
            result = handler(work)
        except StepError as e:
            self.report(conn, "step_fail", call, {"kind": e.kind, "message": e.message, "retryable": e.retryable})
        except Exception as e:  # a bug in a handler: retry, as a Go panic is
            self.report(conn, "step_fail", call, {"kind": "error", "message": f"{type(e).__name__}: {e}", "retryable": True})
        else:
            self.report(conn, "step_complete", call, result)
        finally:
            done.set()
            beat.join()

    def report(self, conn, fn, call, value):
        try:
            status, reason = conn.execute(
                f"SELECT status, reason FROM tasker.{fn}(%s, %s, %s, %s, %s)", (*call, Jsonb(value))
            ).fetchone()
            if status not in ("recorded", "already recorded"):
                print(f"{call[0]} msg {call[1]}: {status}: {reason}", file=sys.stderr, flush=True)
        except psycopg.Error as e:
            # TK409: another attempt is current; nothing changed. Drop it.
            print(f"{call[0]} msg {call[1]}: refused ({e.sqlstate}): {e}", file=sys.stderr, flush=True)

    def heartbeat(self, call, done):
        """Extends the message's lease every half visibility timeout, on a
        connection of its own, until the step is reported."""
        conn = None
        try:
            while not done.wait(self.vt / 2):
                conn = conn or psycopg.connect(self.url, autocommit=True, application_name=self.name)
                conn.execute("SELECT tasker.step_heartbeat(%s, %s, %s, %s, %s)", (*call, self.vt))
        except psycopg.Error as e:
            print(f"{call[0]} msg {call[1]}: heartbeat refused ({e.sqlstate}): {e}", file=sys.stderr, flush=True)
        finally:
            if conn:
                conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("namespaces", nargs="+", help="namespaces to run (declared external = true)")
    p.add_argument("--database-url", default=os.environ.get("TASKER_DATABASE_URL"), help="default: $TASKER_DATABASE_URL")
    p.add_argument("--name", default="python-worker", help="recorded on its transitions as external:NAME")
    p.add_argument("--vt", type=int, default=30, help="seconds a read message stays invisible (its visibility timeout)")
    p.add_argument("--batch", type=int, default=10, help="messages read at once")
    p.add_argument("--poll", type=int, default=5, help="seconds a read waits for a message")
    a = p.parse_args()
    if not a.database_url:
        p.error("--database-url or TASKER_DATABASE_URL is required")
    w = Worker(a.database_url, a.name, a.namespaces, a.vt, a.batch, a.poll)
    signal.signal(signal.SIGTERM, lambda *_: w.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: w.stopping.set())
    print(f"python worker ready: {', '.join(w.queues)}", file=sys.stderr, flush=True)
    w.run()


if __name__ == "__main__":
    main()
