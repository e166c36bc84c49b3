"""Offline converters from the datasets' original releases to what d2seg's loaders read; run by
the ``datasets/prepare_*.py`` scripts, never at import or registration time."""
