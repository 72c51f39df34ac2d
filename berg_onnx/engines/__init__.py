"""Engines that run an experiment's job somewhere other than this process.

The local engine lives with the experiment itself (``berg_onnx.experiment``);
each module here runs the same ``ExperimentJob`` into the same store on other
machinery and imports its framework only when it runs, so ``import berg_onnx``
never pulls in an engine's dependencies.

- ``ray``: Ray Data on a Ray cluster, or on a local Ray started for the run
  (the ``[ray]`` extra).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from berg_onnx.engines.ray import RayOptions, import_ray, run_ray
from berg_onnx.errors import InvalidParameterError

ENGINES = ("local", "ray")

#: Runs a planned job into an opened store: (berg, job, store, *, device, show_progress).
EngineRunner = Callable[..., Any]


def select_engine(engine: Any) -> EngineRunner | None:
    """The runner for ``engine`` ("local" -> None, the caller's own; "ray" or RayOptions).

    Called before the store is touched, so that a missing extra or a bad
    value fails at once.
    """
    if isinstance(engine, str) and engine == "local":
        return None
    if isinstance(engine, str) and engine == "ray":
        engine = RayOptions()
    if not isinstance(engine, RayOptions):
        raise InvalidParameterError(
            f"engine must be one of {', '.join(ENGINES)} (or a RayOptions), got {engine!r}"
        )
    import_ray()
    return functools.partial(run_ray, options=engine)


def engine_from_cli(engine: str, ray_address: str | None, ray_actors: int | None) -> Any:
    """The ``engine`` value for ``--engine``/``--ray-address``/``--ray-actors``."""
    if engine != "ray":
        if ray_address is not None or ray_actors is not None:
            raise InvalidParameterError("--ray-address and --ray-actors need --engine ray")
        return engine
    return RayOptions(address=ray_address, actors=ray_actors)


__all__ = ["ENGINES", "RayOptions", "engine_from_cli", "select_engine"]
