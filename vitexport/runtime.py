"""The old public path of the serving API: ``from vitexport.runtime import Predictor`` (see `vitexport.serving`)."""

from vitexport.serving.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
