"""Training and everything that judges or fits a model: train, evaluate, cv, calibrate, teachers.
May use `ecgvit.runtime`; nothing in `ecgvit.runtime` uses this package."""
