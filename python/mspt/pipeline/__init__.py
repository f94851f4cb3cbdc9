"""The sequential MSPT pipeline: ``mspt.run(config)`` from a tilt series to a volume, atoms and figures."""

from .sequential import PipelineResult, run

__all__ = ["PipelineResult", "run"]
