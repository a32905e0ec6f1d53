"""Stage 1, what goes in: contrast pairs (and the toy model's ready-made data sets)."""

from steerlens.samples.sample import SampleLike, SteeringVectorTrainingSample, normalize_samples

__all__ = ["SampleLike", "SteeringVectorTrainingSample", "normalize_samples"]
