"""A local stand-in for the Driver2 API, with generated Belgian data, and the seeder that builds
the PlanManager database those data are meant to meet."""

from driver2_sandbox.data import CASE_OUTCOMES, CASES, DEFAULT_SHARES, Driver2Dataset

__all__ = ["CASES", "CASE_OUTCOMES", "DEFAULT_SHARES", "Driver2Dataset"]
