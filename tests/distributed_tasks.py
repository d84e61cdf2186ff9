"""Tiny task functions for tests/test_distributed.py, in a module of their own: workers import
a function's module by name, and the test module itself would drag TensorFlow into each."""

from __future__ import annotations

import os
import time


def square_after(item: tuple[int, float]) -> int:
    """item = (value, seconds to sleep): later items can finish first."""
    value, seconds = item
    time.sleep(seconds)
    return value * value


def fail_on_three(value: int) -> int:
    if value == 3:
        raise ValueError(f"bad item {value}")
    return value


def add_shared(value: int, shared: dict[str, int]) -> int:
    return value + shared["offset"]


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()
