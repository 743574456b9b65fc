"""Strategies (installed as ``tts.strategies``): one strategy per module."""
