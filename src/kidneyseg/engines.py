"""Running a batch of cases on a Ray cluster (``kidneyseg segment --engine ray``).

Each Ray worker is an actor that loads the pipeline's model once and segments the cases it
is given, writing each case's outputs atomically into the shared output folder. The driver
(the ``kidneyseg`` process) hands out cases as workers become free and keeps the status and
volume tables, so the batch keeps every property of the local engine: a failure in one case
never stops the others, a re-run skips finished cases, nothing partial is left behind. A
worker that dies mid-case (killed, out of memory, a lost node) is restarted by Ray and its
case retried (``max_restarts`` / ``max_task_retries``); a case that still cannot be done is a
``failed`` row. Workers ask for one GPU each when the cluster has GPUs, else one CPU.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

from .errors import InputError

MAX_RETRIES = 2


class _Worker:
    """A Ray actor: one model load, then one case per :meth:`run` call."""

    def __init__(self, request, opts, secondary, threads: int) -> None:
        if threads:
            from .inference.cpu import set_cpu_threads

            set_cpu_threads(threads)
        self.request = request
        self.opts = opts
        self.secondary = secondary
        from .runner import PipelineLoader

        self.loader = PipelineLoader(request.load_pipeline)

    def pid(self) -> int:
        return os.getpid()

    def run(self, f: str, case: str):
        from .runner import StopRun, process_case

        t0 = time.perf_counter()
        try:
            row, paths, picture, digest = process_case(self.loader, Path(f), case, self.opts, self.secondary)
        except StopRun as exc:
            return ("stop", str(exc), time.perf_counter() - t0)
        except InputError as exc:
            return ("failed", str(exc), time.perf_counter() - t0)
        return ("done", (row, [str(p) for p in paths], picture, digest), time.perf_counter() - t0)


def run_on_ray(todo: Sequence[tuple[Path, str]], opts, request, secondary, record: Callable) -> None:
    """Segment ``todo`` (``(path, case)`` pairs) on Ray for ``request`` (a
    :class:`kidneyseg.runner.SegmentRequest`: pipeline, model, device and options, the
    cluster ``address``, ``workers`` and ``progress``); ``record(path, case, outcome,
    seconds)`` is called in the driver for every case as it finishes.

    ``request.address`` is a Ray cluster address (``ray://host:10001`` or ``auto``); ``None``
    starts a local instance with ``request.workers`` CPUs. Each of the ``request.workers``
    actors loads the model once.

    Raises:
        InputError: Ray is not installed, or the cluster cannot be reached, or the model
            cannot be loaded (the batch stops).
    """
    from .optional import require

    ray = require("ray", "--engine ray")
    from ray.exceptions import RayActorError, RayTaskError

    address, workers = request.address, request.workers
    if workers < 1:
        raise InputError(f"--workers: expected >= 1, got {workers}")
    started = False
    if address is None:
        # the local instance is kidneyseg's own, started and stopped by this run: Ray's notice
        # that it enabled token authentication by default is not the user's to act on
        import logging

        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if not ray.is_initialized():
        try:
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"--engine ray: cannot reach the Ray cluster at {address or 'a new local instance'} ({exc})") from None
        started = True
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        threads = 0 if gpus else 1
        actor_cls = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES)(_Worker)
        actors = [actor_cls.remote(request, opts, secondary, threads)
                  for _ in range(workers)]
        queue = list(todo)
        pending: dict = {}  # object ref -> (actor, path, case, t0)
        idle = list(actors)
        from tqdm import tqdm

        bar = tqdm(total=len(queue), desc="segment (ray)", unit="case", disable=not request.progress or len(queue) < 2)
        while queue or pending:
            while queue and idle:
                actor = idle.pop()
                f, case = queue.pop(0)
                pending[actor.run.remote(str(f), case)] = (actor, f, case, time.perf_counter())
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            actor, f, case, t0 = pending.pop(ref)
            try:
                kind, payload, seconds = ray.get(ref)
            except (RayActorError, RayTaskError) as exc:
                kind, payload, seconds = "failed", f"worker lost while segmenting {case} ({exc.__class__.__name__})", \
                    time.perf_counter() - t0
                actor = actor_cls.remote(request, opts, secondary, threads)
            if kind == "stop":
                raise InputError(payload)
            outcome = InputError(payload) if kind == "failed" else (payload[0], [Path(p) for p in payload[1]], payload[2],
                                                                             payload[3])
            record(f, case, outcome, seconds)
            idle.append(actor)
            bar.update()
        bar.close()
    finally:
        if started:
            ray.shutdown()


__all__ = ["MAX_RETRIES", "run_on_ray"]
