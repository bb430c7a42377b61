"""The public path of offline batch inference: ``vitexport.batch.run(model, sources, output, ...)`` returns a
`Summary` (see `vitexport.serving.batch`); the `vitexport batch` command calls the same function."""

from vitexport.serving.batch.job import Progress, Summary, run

__all__ = ["Progress", "Summary", "run"]
