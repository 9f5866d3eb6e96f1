"""One small error hierarchy: permanent errors are reported and never retried, transient ones are."""


class TaggerError(Exception):
    """Base of every error the tagger raises on purpose."""


class PermanentError(TaggerError):
    """Retrying cannot help (bad input, incompatible artifact); record the reason and move on."""


class TransientError(TaggerError):
    """May succeed on retry (a service briefly down)."""


class ManifestError(PermanentError):
    """A dataset manifest or its table is unusable; the message names the file, row or field."""


class ArtifactError(PermanentError):
    """A model artifact is missing, corrupt or needs encoders that are not available here."""


class InputError(PermanentError):
    """An item given to the model is unusable (for example, neither text nor image)."""
