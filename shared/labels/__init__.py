"""Human labels: a person's decisions on tags, catalogue imports, and the reads that retraining needs.

A human label is a ``product_tags`` row with ``source='human'``: ``confirmed`` rows are training
targets, ``rejected`` rows are negatives. The model never overwrites them (``apply_batch`` only
replaces ``source='model'`` rows). Every function takes the session first and never commits: the
command or request that calls it owns the transaction, so an import or a correction lands whole.

Grouped by role; callers import from the submodule: :mod:`~shared.labels.decisions` (one person's
decision), :mod:`~shared.labels.imports` (a labelled catalogue), :mod:`~shared.labels.queries`
(reads for retraining), with :mod:`~shared.labels.text` holding the text checks the first two share.
"""
