"""The serving tests use the tiny packaged model of the inference tests."""

from tests.inference.conftest import engine, greedy_engine, package_dir, user_wav  # noqa: F401
