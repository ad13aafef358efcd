"""vitalssl: VitalDB PPG+ECG windows and masked-signal-model pretraining of a TinyTimeMixer encoder."""

__version__ = "0.1.0"
