"""Shared fixtures: the Driver2 sandbox over HTTP and throwaway PlanManager databases."""

pytest_plugins = ["db_fixtures"]
