"""Gymnasium environments of sb3-mb, registered when :mod:`sb3_mb` (or this module) is imported.

``gymnasium.make("sb3_mb:sb3_mb/<Id>")`` works without a prior import: Gymnasium imports the module
named before the colon, which registers the ids.
"""
