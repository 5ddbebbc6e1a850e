"""Errors of the training stage, importable without torch (the CLI reports them as one line)."""


class RecipeError(ValueError):
    """A recipe that cannot be trained: the message names the file and the key."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and batch and the checkpoint kept."""
