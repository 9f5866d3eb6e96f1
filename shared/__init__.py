"""What every tagger process imports: settings, errors and the model library (``shared.ml``)."""
