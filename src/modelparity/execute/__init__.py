"""Execute a plan: every backend in its own worker process, its outputs streamed into a sink.

- `run.py`: `execute(plan, context)` and the sinks (the reference's spools, a candidate's
  compares); `run_backend` runs any backend into any sink.
- `runner.py`: the parent's handle on one worker; `worker.py`: the worker process itself.
- `protocol.py`: the one message protocol of every child process (workers and the export).
- `spool.py`: the reference's outputs on disk; `cache.py`: resume, a cache around runs.
- `outcome.py`: `BackendRun`, what one backend did, handed to `analyse`.

Nothing is imported here, so a worker process imports only what it needs.
"""
